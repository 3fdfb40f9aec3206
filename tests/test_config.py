"""Configuration: presets, overrides, and the errors users see for bad configs."""
from __future__ import annotations

import pytest

import lvmkit
from lvmkit.core.config import read_toml
from lvmkit import ConfigError


def test_kind_presets_fill_unset_fields_and_explicit_values_win():
    vae = lvmkit.make_config({"model": {"kind": "vae"}}).model
    assert (vae.regularizer, vae.stochastic, vae.beta) == ("kl", True, 1.0)
    beta = lvmkit.make_config({"model": {"kind": "beta-vae"}}).model
    assert beta.beta == 4.0
    info = lvmkit.make_config({"model": {"kind": "infovae"}}).model
    assert info.regularizer == "mmd"
    dae = lvmkit.make_config({"model": {"kind": "dae"}}).model
    assert dae.corruption == "gaussian" and not dae.stochastic
    assert lvmkit.make_config({"model": {"kind": "beta-vae", "beta": 2.5}}).model.beta == 2.5


def test_overrides_parse_toml_values(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[model]\nlatent_dim = 4\n')
    cfg = lvmkit.load_config(p, ["model.latent_dim=8", "model.hidden=[64, 32]", "train.lr=3e-4",
                                 "data.name=digits", "model.learn_sigma=true"])
    assert cfg.model.latent_dim == 8 and cfg.model.hidden == [64, 32]
    assert cfg.train.lr == 3e-4 and cfg.model.learn_sigma is True and cfg.data.name == "digits"


def test_unknown_key_names_the_valid_keys():
    with pytest.raises(ConfigError, match=r"Unknown config key 'model.latentdim'; valid keys in the autoencoder family's \[model\] are: kind, family, latent_dim"):
        lvmkit.make_config({"model": {"latentdim": 3}})


def test_unknown_section():
    with pytest.raises(ConfigError, match=r"Unknown config section 'trian'"):
        lvmkit.make_config({"trian": {"epochs": 3}})


def test_wrong_type_and_impossible_values():
    with pytest.raises(ConfigError, match=r"Invalid value for 'train.epochs'.*got 'ten'"):
        lvmkit.make_config({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"Invalid value for 'model.latent_dim': Input should be greater than 0"):
        lvmkit.make_config({"model": {"latent_dim": 0}})
    with pytest.raises(ConfigError, match=r"Unknown model kind 'vea'; choose one of: ae, beta-vae, dae, (.*, )?vae\."):
        lvmkit.make_config({"model": {"kind": "vea"}})


def test_impossible_combination_is_refused():
    with pytest.raises(ConfigError, match=r"regularizer 'kl' needs a stochastic encoder"):
        lvmkit.make_config({"model": {"kind": "vae", "stochastic": False}})


def test_unknown_component_names_list_the_choices():
    cfg = lvmkit.make_config({"model": {"network": "transformer"}})
    with pytest.raises(ConfigError, match=r"Unknown network 'transformer'; choose one of: conv, mlp"):
        lvmkit.build_model(cfg.model, (1, 8, 8))


def test_conv_network_on_tabular_data_is_refused():
    cfg = lvmkit.make_config({"model": {"network": "conv"}})
    with pytest.raises(ConfigError, match=r"needs image data of shape \(channels, height, width\), got examples of shape \(5,\)"):
        lvmkit.build_model(cfg.model, (5,))


def test_bad_override_syntax_and_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match=r"not of the form section.key=value"):
        lvmkit.load_config(None, ["latent_dim=3"])
    with pytest.raises(ConfigError, match=r"does not exist"):
        lvmkit.load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nkind = 'vae'")
    with pytest.raises(ConfigError, match=r"is not valid TOML"):
        lvmkit.load_config(bad)


def test_shipped_configs_validate():
    from conftest import CONFIGS

    names = sorted(p.name for p in CONFIGS.glob("*.toml"))
    assert {"vae_digits.toml", "convvae_fashion.toml", "ae_fashion.toml", "infovae_fashion.toml"} <= set(names)
    for name in names:
        if "search" in read_toml(CONFIGS / name):  # a search space: its base experiment and [search] table
            from lvmkit.search import load_space

            load_space(CONFIGS / name)
        else:
            lvmkit.load_config(CONFIGS / name)
