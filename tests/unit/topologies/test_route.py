from topologies.model import Route


def test_ecmp_route_command():
    cmd = Route("r1", "10.2.0.0/16", via=("10.0.0.1", "10.0.1.1"), table=100).command()
    assert cmd == ["ip", "route", "replace", "10.2.0.0/16", "nexthop", "via", "10.0.0.1",
                   "nexthop", "via", "10.0.1.1", "table", "100"]
