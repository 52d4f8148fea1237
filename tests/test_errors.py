"""`kprl.errors.first_line` and the one render-error message of `kprl.envs.factory.render_error`."""

from kprl.envs.factory import render_error
from kprl.errors import KprlError, first_line


def test_first_line_skips_blank_lines_and_names_an_empty_error():
    assert first_line(ValueError("\n  shapes differ  \nsecond line")) == "shapes differ"
    assert first_line(RuntimeError("")) == "RuntimeError"


def test_render_error_explains_mujoco_gl_in_one_line():
    error = render_error(RuntimeError("Cannot initialize a EGL device display\ntraceback detail"))
    assert isinstance(error, KprlError) and len(str(error).splitlines()) == 1
    assert "MUJOCO_GL=egl" in str(error) and "Cannot initialize a EGL device display" in str(error)
    assert render_error(OSError("disk full")) is None
