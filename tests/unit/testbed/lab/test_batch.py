from testbed.lab.batch import groups


def test_consecutive_commands_of_a_kind_are_grouped_in_order():
    cmds = [["ip", "link", "set", "lo", "up"], ["sysctl", "-qw", "a=1"], ["sysctl", "-qw", "b=2"],
            ["ip", "addr", "add", "10.0.0.1/24", "dev", "x"], ["ip", "link", "set", "x", "up"],
            ["tc", "qdisc", "add", "dev", "x", "root", "netem"], ["nft", "-f", "-"],
            ["nft", "-f", "-"]]
    got = [(kind, len(g)) for kind, g in groups(cmds)]
    assert got == [("ip", 1), ("sysctl", 2), ("ip", 2), ("tc", 1), ("single", 1),
                   ("single", 1)]
