import pytest

from testbed import spec


def test_default_suite_is_valid():
    suite = spec.default_suite()
    assert suite and all(s.link.delay_ms > 0 for s in suite)
    assert "netem" in suite[0].needs


def test_error_names_file_and_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[link]\ndelay_ms = -3\n')
    with pytest.raises(spec.SpecError) as err:
        spec.load(p)
    assert str(p) in str(err.value) and "link.delay_ms" in str(err.value)


def test_unknown_key_and_kind_and_toml_syntax(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text('[link]\ndelay = 3\n')
    with pytest.raises(spec.SpecError, match="link.delay"):
        spec.load(p)
    p.write_text('kind = "teleport"\n')
    with pytest.raises(spec.SpecError, match="unknown experiment kind"):
        spec.load(p)
    p.write_text('[link\n')
    with pytest.raises(spec.SpecError, match="not valid TOML"):
        spec.load(p)
    with pytest.raises(spec.SpecError, match="cannot read"):
        spec.load(tmp_path / "missing.toml")


def test_rate_only_spec_does_not_need_netem():
    s = spec.parse({"link": {"delay_ms": 0, "bw_mbps": 10}})
    assert "netem" not in s.needs
