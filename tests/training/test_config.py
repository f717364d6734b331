"""The typed training config: presets, YAML, CLI overrides and the one-message errors of `check_config`."""

import json

import pytest

from training.config import LossConfig, TrainConfig, check_config, load_config, preset_names
from training.train_fhavatar import main, parse_args


def _dataset(root, head_model="open_head", clips=1):
    root.mkdir(parents=True, exist_ok=True)
    info = {"format": "fhavatar-dataset", "version": 1, "head_model": head_model, "resolution": 32,
            "num_clips": clips, "num_frames": clips, "has_prior_views": False}
    (root / "dataset.json").write_text(json.dumps(info))
    lines = [json.dumps({"clip": f"c{i}", "dir": f"c{i}", "num_frames": 1, "source": "synthetic", "skipped": False})
             for i in range(clips)]
    (root / "manifest.jsonl").write_text("".join(line + "\n" for line in lines))
    return root


def _cfg(tmp_path, **overrides):
    base = {"train_data_dir": str(_dataset(tmp_path / "data")), "synthetic_clips": 0, "report_to": "none"}
    return load_config("tiny-cpu", {**base, **overrides})


def test_presets_exist_and_paper_matches_section_b():
    assert {"paper", "tiny-cpu"} <= set(preset_names())
    paper = load_config("paper")
    assert (paper.learning_rate, paper.train_batch_size, paper.max_train_steps) == (1e-4, 4, 37500)
    assert (paper.model_preset, paper.num_prior_views, paper.head_model) == ("full", 2, "open_head")
    loss = paper.loss
    assert (loss.lambda_3d, loss.lambda_eye, loss.lambda_pos, loss.lambda_shape, loss.lambda_shape_tv) == (50, 5, 1, 1, 10)
    assert (loss.lambda_id, loss.lambda_aux, loss.epsilon) == (0.25, 0.5, 0.1)
    assert (loss.regularizer_start_step, loss.lambda_3d_late, loss.lambda_3d_late_step) == (7500, 100, 25000)
    assert loss.geometry_tv == "3d"
    # every field of the paper preset is spelled out in the YAML (a renamed field would fail to load)
    assert LossConfig() == loss and TrainConfig(output_dir="fhavatar-paper").loss == loss
    tiny = load_config("tiny-cpu")
    assert tiny.model_preset == "tiny" and tiny.prior is None and tiny.synthetic_clips > 0 and tiny.loss.lpips_net is None


def test_overrides_are_parsed_and_type_checked():
    cfg = load_config("tiny-cpu", {"max_train_steps": "7", "loss.lambda_3d": "100", "prior": "null",
                                   "background": "[0, 0, 0]", "output_dir": "123", "learning_rate": 1})
    assert cfg.max_train_steps == 7 and cfg.loss.lambda_3d == 100.0 and cfg.prior is None
    assert cfg.background == [0, 0, 0] and cfg.output_dir == "123" and isinstance(cfg.learning_rate, float)
    with pytest.raises(ValueError, match=r"`max_train_steps` must be int, got 'ten'"):
        load_config("tiny-cpu", {"max_train_steps": "ten"})
    with pytest.raises(ValueError, match=r"`loss.geometry_tv` must be '3d' \| 'uv' \| 'none', got 'xy'"):
        load_config("tiny-cpu", {"loss.geometry_tv": "xy"})
    with pytest.raises(ValueError, match="`push_to_hub` must be bool"):
        load_config("tiny-cpu", {"push_to_hub": 1})


def test_unknown_keys_name_the_key_and_a_close_match(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown config key\(s\): max_train_step \(did you mean max_train_steps\?\)"):
        load_config("tiny-cpu", {"max_train_step": 3})
    path = tmp_path / "bad.yaml"
    path.write_text("model_preset: tiny\nloss:\n  lambda_3D: 1\n")
    with pytest.raises(ValueError, match=r"loss.lambda_3D \(did you mean loss.lambda_3d\?\)"):
        load_config(str(path))
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(str(path))
    with pytest.raises(FileNotFoundError, match="neither a preset .*paper.*tiny-cpu"):
        load_config("no-such-preset")
    with pytest.raises(FileNotFoundError, match="no YAML file"):
        load_config(str(tmp_path / "missing.yaml"))


def test_check_config_dataset_errors(tmp_path):
    check_config(_cfg(tmp_path))  # a valid dataset passes
    with pytest.raises(ValueError, match="`train_data_dir`: no dataset folder at .*nowhere"):
        check_config(_cfg(tmp_path, train_data_dir=str(tmp_path / "nowhere")))
    empty = _dataset(tmp_path / "empty")
    (empty / "manifest.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="the manifest .* lists no clip"):
        check_config(_cfg(tmp_path, train_data_dir=str(empty)))
    flame = _dataset(tmp_path / "flame", head_model="flame")
    with pytest.raises(ValueError, match="`head_model` is 'open_head' but the dataset .* was tracked with 'flame'"):
        check_config(_cfg(tmp_path, train_data_dir=str(flame)))
    with pytest.raises(ValueError, match="`train_data_dir` is not set"):
        check_config(load_config("tiny-cpu", {"synthetic_clips": 0, "report_to": "none"}))
    # a synthetic run needs no dataset yet
    check_config(load_config("tiny-cpu", {"report_to": "none", "output_dir": str(tmp_path / "run")}))


def test_check_config_value_errors(tmp_path):
    cases = [
        ({"train_batch_size": 0}, "`train_batch_size` must be >= 1"),
        ({"reconstruction_probability": 1.5}, r"`reconstruction_probability` must be in \[0, 1\]"),
        ({"background": [1, 1]}, "`background` must be three numbers"),
        ({"loss.lambda_3d": -1}, "`loss.lambda_3d` must be >= 0"),
        ({"prior": str(tmp_path)}, "`prior`: .* is not a saved prior folder"),
        ({"model_overrides": {"resolutoin": 64}}, r"unknown FHAvatarModel arguments \['resolutoin'\]"),
        ({"loss.id_network": str(tmp_path / "arcface.safetensors")}, "`loss.id_network`: no face-recognition network"),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            check_config(_cfg(tmp_path, **overrides))


def test_parse_args_and_main_print_one_line(tmp_path, capsys):
    cfg = parse_args(["--config", "tiny-cpu", "--max_train_steps", "3", "--loss.lambda_eye", "2", "--push_to_hub",
                      "--prior", "null"])
    assert (cfg.max_train_steps, cfg.loss.lambda_eye, cfg.push_to_hub, cfg.prior) == (3, 2.0, True, None)
    flame = _dataset(tmp_path / "flame", head_model="flame")
    code = main(["--config", "tiny-cpu", "--synthetic_clips", "0", "--train_data_dir", str(flame),
                 "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("train_fhavatar.py: error: `head_model` is 'open_head'") and "\n" not in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
    assert main(["--config", "tiny-cpu", "--learning_rat", "1"]) == 2
    assert "did you mean learning_rate?" in capsys.readouterr().err
