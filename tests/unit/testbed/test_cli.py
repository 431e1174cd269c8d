def test_parse_params_types_and_errors():
    import click
    import pytest

    from testbed.cli import parse_params

    assert parse_params(("spines=4", "rtt_ms=150.5", "stacks=false", "name=x",
                         "links=[1, 2]")) == {"spines": 4, "rtt_ms": 150.5, "stacks": False,
                                              "name": "x", "links": [1, 2]}
    with pytest.raises(click.BadParameter):
        parse_params(("spines",))


def test_topo_show_cli_reports_unknown_parameter():
    from click.testing import CliRunner

    from testbed.cli import main

    res = CliRunner().invoke(main, ["topo", "show", "wan", "rtt=3"])
    assert res.exit_code != 0 and "unknown parameter" in res.output and "rtt_ms" in res.output
    res = CliRunner().invoke(main, ["topo", "show", "pair", "delay_ms=5"])
    assert res.exit_code == 0 and "h1-eth0" in res.output
