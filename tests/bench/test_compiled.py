"""python -m stepcache.bench.compiled: the arguments it refuses before loading anything."""

import pytest

from stepcache.bench import compiled


@pytest.mark.parametrize("argv, message", [
    (["--model", "arch:dit-xl-2"], "must be a zoo model"),
    (["--set", "interval"], "FIELD=VALUE"),
])
def test_bad_arguments_are_refused_with_what_to_give(argv, message, capsys):
    with pytest.raises(SystemExit):
        compiled.main(argv)
    assert message in capsys.readouterr().err
