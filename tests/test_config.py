"""Config: TOML + --set overrides, and a clear ValueError naming every bad key and value."""

import pytest

from splitnet.config import Config, load


def test_defaults_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('seed = 3\n[model]\nhidden = [4, 4]\n[split]\nvariant = "alternating"\n')
    cfg = load(p, ["split.groups=2", "data.name=wine", "train.lr=0.1"])
    assert cfg.seed == 3 and cfg.model.hidden == (4, 4) and cfg.split.variant == "alternating"
    assert cfg.data.name == "wine" and cfg.train.lr == 0.1
    assert load().hash() == Config().hash() and cfg.hash() != Config().hash()


@pytest.mark.parametrize(
    "override,msg",
    [
        ("split.groups=0", "split.groups=0"),
        ("split.groups=9", "split.groups=9 exceeds the width 8"),
        ("data.pretrain_fraction=1.5", "data.pretrain_fraction=1.5"),
        ("data.test_fraction=0", "data.test_fraction=0"),
        ("data.name=cifar", "data.name='cifar'"),
        ("split.strategy=magic", "split.strategy='magic'"),
        ("split.variant=zigzag", "split.variant='zigzag'"),
        ("model.hidden=[]", "model.hidden=\\[\\]"),
        ("model.hidden=[4,0]", "model.hidden\\[1\\]=0"),
        ("model.depth=3", "unknown key model.depth"),
        ("colour=3", "unknown key 'colour'"),
        ("train.lr=fast", "train.lr must be of type float"),
        ("data.name=idx", "needs data.path"),
        ("data.path=/no/such/file", None),
    ],
)
def test_bad_values_are_named(override, msg):
    if msg is None:  # a path alone is fine until data.name=idx uses it
        load(None, [override])
        with pytest.raises(ValueError, match="does not exist"):
            load(None, [override, "data.name=idx"])
        return
    with pytest.raises(ValueError, match=msg):
        load(None, [override])


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read config"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nhidden = 3")
    with pytest.raises(ValueError, match="not valid TOML"):
        load(bad)


def test_seeds_make_single_seed_runs():
    cfg = load(None, ["seeds=[0, 2]"])
    assert cfg.run_seeds == (0, 2) and cfg.for_seed(2).seed == 2 and cfg.for_seed(2).seeds == ()
    assert load().run_seeds == (0,)
    with pytest.raises(ValueError, match="repeats"):
        load(None, ["seeds=[1, 1]"])
