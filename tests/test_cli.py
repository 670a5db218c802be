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
