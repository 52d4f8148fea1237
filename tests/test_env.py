"""Tests of the dm_control pixel environment (kprl.envs.dmc) against real dm_control and real renders."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from kprl.envs import (
    DMCEnv,
    Step,
    default_action_repeat,
    default_camera,
    landmark_points,
    project_points,
    rescale_action,
    split_task,
)
from kprl.envs.dmc import PLANET_ACTION_REPEAT

# dm_control after `kprl` (the import above), so MUJOCO_GL=egl is already set.
from dm_control import suite  # noqa: E402  isort: skip


@pytest.fixture
def cartpole() -> Iterator[DMCEnv]:
    """A cartpole swingup env at the reference settings (84 px, stack 3, repeat 8)."""
    env = DMCEnv("cartpole_swingup", seed=0)
    yield env
    env.close()


def _set_cartpole(env: DMCEnv, cart_x: float, pole_angle: float) -> None:
    """Put the cart at ``cart_x`` and the pole at ``pole_angle`` (0 = upright); kinematics are recomputed."""
    with env.physics.reset_context():
        env.physics.named.data.qpos["slider"] = cart_x
        env.physics.named.data.qpos["hinge_1"] = pole_angle


# ---------------------------------------------------------------------------------------------------- names


def test_split_task_resolves_domains_with_underscores() -> None:
    assert split_task("cartpole_swingup") == ("cartpole", "swingup")
    assert split_task("cartpole_balance_sparse") == ("cartpole", "balance_sparse")
    assert split_task("ball_in_cup_catch") == ("ball_in_cup", "catch")
    assert split_task("point_mass_easy") == ("point_mass", "easy")
    assert split_task("humanoid_CMU_run") == ("humanoid_CMU", "run")


@pytest.mark.parametrize("bad", ["cartpole_flip", "cartpole", "pong", "", "ball_in_cup"])
def test_unknown_task_raises_one_line_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown DeepMind Control task") as info:
        split_task(bad)
    message = str(info.value)
    assert "\n" not in message and repr(bad) in message and "cartpole_swingup" in message
    with pytest.raises(ValueError, match="unknown DeepMind Control task"):
        DMCEnv(bad)


def test_defaults_follow_planet_and_drq() -> None:
    assert default_action_repeat("cartpole_swingup") == 8
    assert default_action_repeat("reacher_easy") == 4
    assert default_action_repeat("cheetah_run") == 4
    assert default_action_repeat("finger_spin") == 2
    assert default_action_repeat("ball_in_cup_catch") == 4
    assert default_action_repeat("walker_walk") == 2
    assert default_action_repeat("hopper_hop") == 1
    assert set(PLANET_ACTION_REPEAT) == {"cartpole", "reacher", "cheetah", "finger", "ball_in_cup", "walker"}
    assert default_camera("quadruped_walk") == 2
    assert default_camera("cartpole_swingup") == 0


# ------------------------------------------------------------------------------------------ shapes, stacking


@pytest.mark.parametrize("task, action_dim", [("cartpole_swingup", 1), ("reacher_easy", 2)])
def test_step_fields_shapes_and_frame_stack(task: str, action_dim: int) -> None:
    env = DMCEnv(task, image_size=84, frame_stack=3, seed=0)
    assert env.action_dim == action_dim
    assert env.obs_shape == (9, 84, 84) and env.frame_shape == (3, 84, 84)
    first = env.reset()
    _check_step_types(first, env)
    assert first.first and not first.last and not first.truncated and not first.terminated
    assert first.reward == 0.0 and first.discount == 1.0
    # The stack starts as three copies of the first frame.
    for k in range(3):
        np.testing.assert_array_equal(first.obs[3 * k : 3 * k + 3], first.frame)

    frames = [first.frame] * 3
    rng = np.random.default_rng(0)
    for _ in range(4):
        step = env.step(rng.uniform(-1, 1, action_dim))
        _check_step_types(step, env)
        assert not step.first and not step.last
        frames.append(step.frame)
        # Oldest first, newest last; the newest slice is the frame itself.
        np.testing.assert_array_equal(step.obs, np.concatenate(frames[-3:], axis=0))
        np.testing.assert_array_equal(step.obs[-3:], step.frame)
    assert not np.array_equal(frames[0], frames[-1]), "the scene should move under random actions"
    # Observations are fresh arrays: editing one does not leak into the env's stack.
    step.obs[:] = 0
    assert env.step(np.zeros(action_dim)).obs[3:6].any()
    env.close()


def _check_step_types(step: Step, env: DMCEnv) -> None:
    """Assert the dtypes and shapes the replay and the agent rely on."""
    assert step.obs.dtype == np.uint8 and step.obs.shape == env.obs_shape
    assert step.frame.dtype == np.uint8 and step.frame.shape == env.frame_shape
    assert step.landmarks.dtype == np.float32 and step.landmarks.shape == (len(env.landmark_names), 2)
    assert np.isfinite(step.landmarks).all()
    assert type(step.reward) is float and type(step.discount) is float
    assert all(type(flag) is bool for flag in (step.first, step.last, step.truncated, step.terminated))


def test_landmark_names() -> None:
    env = DMCEnv("reacher_easy")
    assert env.landmark_names == ["arm", "hand", "finger"]  # bodies only: the target is a world geom
    env.close()
    env = DMCEnv("cartpole_two_poles")
    assert env.landmark_names == ["cart", "pole_tip", "pole_2_tip"]
    env.close()


def test_render_matches_frame(cartpole: DMCEnv) -> None:
    step = cartpole.reset()
    image = cartpole.render(84)
    assert image.dtype == np.uint8 and image.shape == (84, 84, 3)
    np.testing.assert_array_equal(image.transpose(2, 0, 1), step.frame)
    assert cartpole.render(120).shape == (120, 120, 3)
    cartpole.close()
    cartpole.close()  # idempotent (the fixture closes it once more)


# -------------------------------------------------------------------------------------- episodes and repeat


def test_cartpole_episode_is_125_truncated_steps_with_summed_rewards(cartpole: DMCEnv) -> None:
    assert cartpole.action_repeat == 8 and cartpole.max_episode_steps == 125
    with pytest.raises(RuntimeError):
        cartpole.step(np.zeros(1))  # before reset()

    raw = suite.load("cartpole", "swingup", task_kwargs={"random": 0})
    raw.reset()
    cartpole.reset()
    rng = np.random.default_rng(1)
    steps: list[Step] = []
    while not (steps and steps[-1].last):
        action = rng.uniform(-1, 1, 1)
        steps.append(cartpole.step(action))
        # The same action held for 8 control steps of an identically seeded raw env.
        expected = sum(raw.step(action).reward for _ in range(8))
        assert steps[-1].reward == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert len(steps) == 125
    assert all(not s.last and s.discount == 1.0 for s in steps[:-1])
    final = steps[-1]
    assert final.last and final.truncated and not final.terminated and final.discount == 1.0
    assert sum(s.reward for s in steps) > 0.0
    np.testing.assert_array_equal(cartpole.physics.data.qpos, raw.physics.data.qpos)
    with pytest.raises(RuntimeError):
        cartpole.step(np.zeros(1))  # after the last step without reset()
    assert cartpole.reset().first


def test_max_episode_steps_rounds_up() -> None:
    env = DMCEnv("cartpole_balance", action_repeat=3)
    assert env.max_episode_steps == 334  # ceil(1000 / 3): the last agent step holds a single control step
    env.close()


def test_termination_stops_the_repeat_early_and_zeroes_discount() -> None:
    env = DMCEnv("cartpole_balance", action_repeat=4)
    calls = {"n": 0}

    def terminate_on_tenth_control_step(physics: object) -> float | None:
        calls["n"] += 1
        return 0.0 if calls["n"] == 10 else None

    # dm_control asks the task after every control step; a discount of 0.0 is a termination.
    env.unwrapped.task.get_termination = terminate_on_tenth_control_step  # type: ignore[method-assign]
    env.reset()
    first, second = env.step(np.zeros(1)), env.step(np.zeros(1))
    assert not first.last and not second.last
    third = env.step(np.zeros(1))
    assert third.last and third.terminated and not third.truncated and third.discount == 0.0
    assert calls["n"] == 10, "the repeat must stop at the control step that ended the episode"
    assert env.physics.data.time == pytest.approx(10 * env.unwrapped.control_timestep())
    with pytest.raises(RuntimeError):
        env.step(np.zeros(1))
    env.close()


def test_actions_are_clipped_and_rescaled_to_spec_bounds() -> None:
    low, high = np.array([-1.0, -0.8, 0.0]), np.array([1.1, 0.8, 4.0])
    np.testing.assert_allclose(rescale_action(np.array([-1.0, -1.0, -1.0]), low, high), low)
    np.testing.assert_allclose(rescale_action(np.array([1.0, 1.0, 1.0]), low, high), high)
    np.testing.assert_allclose(rescale_action(np.zeros(3), low, high), [0.05, 0.0, 2.0])
    np.testing.assert_allclose(rescale_action(np.array([5.0, -7.0, 0.5]), low, high), [1.1, -0.8, 3.0])

    # quadruped is the suite domain whose control ranges are not [-1, 1] (hips -1..1.1, ankles -.8...8).
    env = DMCEnv("quadruped_walk", image_size=32)
    spec = env.unwrapped.action_spec()
    assert not np.allclose(spec.minimum, -1.0) or not np.allclose(spec.maximum, 1.0)
    env.reset()
    for action, expected in [
        (np.ones(env.action_dim), spec.maximum),
        (-np.ones(env.action_dim), spec.minimum),
        (np.zeros(env.action_dim), (spec.minimum + spec.maximum) / 2),
        (np.full(env.action_dim, 3.0), spec.maximum),
    ]:
        env.step(action)
        np.testing.assert_allclose(env.physics.data.ctrl, expected)
    with pytest.raises(ValueError):
        env.step(np.zeros(env.action_dim + 1))
    env.close()


# ------------------------------------------------------------------------------------------ seeds and resume


def test_same_seed_same_frames_different_seed_different_frames() -> None:
    a, b, c = (DMCEnv("reacher_easy", seed=s) for s in (7, 7, 8))
    sa, sb, sc = a.reset(), b.reset(), c.reset()
    np.testing.assert_array_equal(sa.obs, sb.obs)
    np.testing.assert_array_equal(sa.landmarks, sb.landmarks)
    assert not np.array_equal(sa.frame, sc.frame)
    rng = np.random.default_rng(0)
    for _ in range(3):
        action = rng.uniform(-1, 1, a.action_dim)
        sa, sb = a.step(action), b.step(action)
        np.testing.assert_array_equal(sa.obs, sb.obs)
        assert sa.reward == sb.reward
    for env in (a, b, c):
        env.close()


def test_random_state_round_trip_reproduces_the_next_episode(tmp_path) -> None:
    env = DMCEnv("reacher_easy", seed=3)
    env.reset()
    env.step(np.ones(env.action_dim))
    state = env.random_state()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    # It must survive an npz without pickle.
    np.savez(tmp_path / "rng.npz", **state)
    with np.load(tmp_path / "rng.npz", allow_pickle=False) as npz:
        loaded = {k: npz[k] for k in npz.files}
    actions = np.random.default_rng(0).uniform(-1, 1, (3, env.action_dim))
    expected = [env.reset()] + [env.step(a) for a in actions]

    other = DMCEnv("reacher_easy", seed=1234)
    assert not np.array_equal(other.reset().frame, expected[0].frame)
    other.set_random_state(loaded)
    got = [other.reset()] + [other.step(a) for a in actions]
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(e.obs, g.obs)
        np.testing.assert_array_equal(e.landmarks, g.landmarks)
        assert e.reward == g.reward
    # And the RNG is left in the same place too.
    for key in state:
        np.testing.assert_array_equal(env.random_state()[key], other.random_state()[key])
    env.close()
    other.close()


# ------------------------------------------------------------------------------------- landmark projection


def test_projection_convention_matches_rendered_cart_mask_exactly(cartpole: DMCEnv) -> None:
    """Pixel-exact check of the convention (x right, y down, pixel i covers [i, i+1)) on segmentation renders.

    With the cart centred under the camera only its front face (y = -0.15, facing the camera) is visible, an
    axis-aligned rectangle on screen. A pixel belongs to the rendered mask iff its centre (j + 0.5, i + 0.5)
    lies inside the projected rectangle; a half-pixel error in the convention adds or drops a row/column.
    """
    physics = cartpole.physics
    cart_geom = physics.model.name2id("cart", "geom")
    half = physics.model.geom_size[cart_geom]
    _set_cartpole(cartpole, 0.0, np.pi / 2)
    centre = physics.named.data.geom_xpos["cart"]
    corners = np.array([centre + [sx * half[0], -half[1], sz * half[2]] for sx in (-1, 1) for sz in (-1, 1)])
    for size in (84, 100, 128, 256):
        xy = project_points(physics, corners, size, size, 0)
        x0, x1, y0, y1 = xy[:, 0].min(), xy[:, 0].max(), xy[:, 1].min(), xy[:, 1].max()
        centres = np.arange(size) + 0.5
        # Centres within 0.02 px of an edge could go either way under rasterisation rounding; none occur here.
        assert np.abs(centres[:, None] - np.array([x0, x1, y0, y1])[None]).min() > 0.02
        inside_x, inside_y = (centres >= x0) & (centres <= x1), (centres >= y0) & (centres <= y1)
        predicted = inside_y[:, None] & inside_x[None, :]
        seg = physics.render(size, size, camera_id=0, segmentation=True)
        rendered = (seg[..., 0] == cart_geom) & (seg[..., 1] == 5)  # 5 = mjOBJ_GEOM
        np.testing.assert_array_equal(predicted, rendered, err_msg=f"size {size}")


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """Colour with brightness divided out (r, g, b) / (r + g + b): shading changes brightness, not chroma."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb / max(float(rgb.sum()), 1.0)


# (cart position, pole angle from upright): off-centre carts so swapped x/y is caught, pole pointing up, down
# and sideways so a flipped y is caught.
CARTPOLE_STATES = [(0.0, 0.0), (0.6, 0.7), (-1.0, 2.2), (1.3, np.pi), (-0.4, -1.2), (0.25, 4.0), (-0.5, -2.6)]


@pytest.mark.parametrize("size", [256, 84])
def test_cartpole_landmarks_land_on_cart_and_pole_tip(cartpole: DMCEnv, size: int) -> None:
    """The pixel under `cart` and under `pole_tip` has the pole/cart material's colour; beyond the tip not.

    Cart and pole share the "self" material; the background (skybox, floor, rails) is blue. A pixel counts as
    self-coloured when its chroma is within 0.04 of the material's rgba chroma.
    """
    physics = cartpole.physics
    model = physics.model
    self_rgba = {
        tuple(model.mat_rgba[model.geom_matid[model.name2id(g, "geom")], :3]) for g in ("cart", "pole_1")
    }
    assert len(self_rgba) == 1, "cart and pole are expected to share one material"
    target = _chroma(np.array(self_rgba.pop()))

    def is_self(image: np.ndarray, xy: np.ndarray) -> bool:
        x, y = int(np.floor(xy[0])), int(np.floor(xy[1]))
        if not (0 <= x < size and 0 <= y < size):
            return False
        return bool(np.abs(_chroma(image[y, x]) - target).max() < 0.04)

    pixels_per_metre = size / 4 / np.tan(np.deg2rad(model.cam_fovy[0] / 2)) / 2  # camera 4 m from the cart
    cap_radius = model.geom_size[model.name2id("pole_1", "geom"), 0] * pixels_per_metre
    flipped_y_hits = swapped_hits = 0
    for cart_x, angle in CARTPOLE_STATES:
        _set_cartpole(cartpole, cart_x, angle)
        image = cartpole.render(size)
        cart, tip = project_points(physics, landmark_points(physics, "cartpole"), size, size, 0)
        assert is_self(image, cart), (cart_x, angle, "cart")
        assert is_self(image, tip), (cart_x, angle, "pole tip")
        direction = (tip - cart) / np.linalg.norm(tip - cart)
        beyond = tip + direction * (cap_radius + (3.0 if size > 100 else 2.0))
        assert not is_self(image, beyond), (cart_x, angle, "beyond the tip")
        # The check is sharp enough to see the conventions we reject.
        flipped_y_hits += is_self(image, [tip[0], size - tip[1]])
        swapped_hits += is_self(image, cart[::-1]) and is_self(image, tip[::-1])
    assert flipped_y_hits <= 2 and swapped_hits == 0


def test_step_landmarks_are_the_projection_of_the_current_state(cartpole: DMCEnv) -> None:
    cartpole.reset()
    step = cartpole.step(np.ones(1))
    expected = project_points(cartpole.physics, landmark_points(cartpole.physics, "cartpole"), 84, 84, 0)
    np.testing.assert_array_equal(step.landmarks, expected)
    # At reset the pole hangs below the cart: y grows downwards.
    _set_cartpole(cartpole, 0.0, np.pi)
    cart, tip = project_points(cartpole.physics, landmark_points(cartpole.physics, "cartpole"), 84, 84, 0)
    assert tip[1] > cart[1] + 20 and abs(tip[0] - cart[0]) < 0.5
