"""The key=value tools (sar.predict, sar.export) answer a bad argument with one line naming it."""

from __future__ import annotations

import pytest

from sar import export, predict


@pytest.mark.parametrize(("main", "args", "expected"), [
    (predict.main, ["ckpt=a.ckpt", "input=x", "hydra.run.dir=out"], "sar.predict: unknown key 'hydra.run.dir'"),
    (export.main, ["ckpt=a.ckpt", "opsett=17"], "sar.export: unknown key 'opsett' (did you mean 'opset'?)"),
    (predict.main, ["input=x"], "sar.predict: missing required argument(s): ckpt=..."),
    (predict.main, ["ckpt"], "sar.predict: arguments are key=value, got 'ckpt'"),
])
def test_bad_arguments_are_one_line(main, args, expected) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message
    if "unknown key" in expected:
        assert "accepted keys: ckpt" in message


@pytest.mark.parametrize(("argv", "expected"), [
    (["trainer.max_epoch=3"], ("sar.train: unknown key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?); "
                               "accepted under trainer: _target_, accelerator")),
    (["head=heatmap", "head.codec.sigmaa=3"], ("sar.train: unknown key 'head.codec.sigmaa' (did you mean "
                                               "'head.codec.sigma'?); accepted under head.codec: _target_, sigma, "
                                               "unbiased, blur_kernel")),
])
def test_hydra_entry_points_name_a_misspelt_key(argv, expected) -> None:
    from sar.utils.cli import check_overrides

    with pytest.raises(SystemExit) as info:
        check_overrides(argv, "train", "sar.train")
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_valid_overrides_pass_the_check() -> None:
    from sar.utils.cli import check_overrides

    check_overrides(["task=wholebody", "head=rle", "head.loss.num_pairs=2", "optim.lr=1e-3", "+trainer.profiler=simple",
                     "hydra.run.dir=x", "experiment=coco_r50_sar", "trainer.max_epochs=3"], "train", "sar.train")


def test_evaluate_checks_its_own_keys() -> None:
    from sar.utils.cli import check_overrides

    check_overrides(["ckpt=x.ckpt", "dataset=ochuman", "evaluation.nms_thr=0.5"], "evaluate", "sar.evaluate")
    check_overrides(["ckpt=x.ckpt", "dataset.val_bbox_file=null"], "evaluate", "sar.evaluate")  # the ckpt's dataset
    with pytest.raises(SystemExit, match="unknown key 'evaluation.nms_th' \\(did you mean 'evaluation.nms_thr'"):
        check_overrides(["ckpt=x.ckpt", "evaluation.nms_th=0.5"], "evaluate", "sar.evaluate")
