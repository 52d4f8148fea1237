"""The training loop: act, store, update, evaluate, checkpoint, log.

Data flows one way: env -> replay -> batch -> agent.update -> metrics -> logger. Checkpoints are written at episode
boundaries (and at the end), with every RNG state and the replay buffer, so that rerunning the same command after a
kill resumes exactly where the last checkpoint left off and produces the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kprl import config as C
from kprl.envs.factory import PixelEnv, check_task, make_env, task_action_repeat
from kprl.errors import CheckpointError, ConfigError, TrainingError, first_line
from kprl.rl.evaluate import evaluate_policy
from kprl.rl.factory import make_agent
from kprl.rl.replay import FrameReplay
from kprl.runtime.checkpoint import (
    find_checkpoint,
    load_replay_state,
    load_state,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from kprl.runtime.hardware import (
    cpu_identity,
    describe_machine,
    keep_freed_memory,
    peak_rss_mib,
    resolve_device,
)
from kprl.runtime.logger import RunLogger, Throughput, WandbSink
from kprl.runtime.progress import RunEta, Stopwatch, Task, format_seconds
from kprl.runtime.provenance import record_start
from kprl.runtime.run_dir import prepare_run_dir

EVAL_SEED_OFFSET = 100_000


@dataclass
class LoopState:
    """Counters that a checkpoint must restore (besides networks, replay and RNGs)."""

    env_step: int = 0
    episode: int = 0
    updates: int = 0
    next_eval: int = 0
    next_checkpoint: int = 0
    wall_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _rng_state(np_rng: np.random.Generator, aug_gen: torch.Generator, env: PixelEnv) -> dict[str, Any]:
    return {**rng_state(np_rng), "augment": aug_gen.get_state(), "env": env.random_state()}


def _set_rng_state(
    state: dict[str, Any], np_rng: np.random.Generator, aug_gen: torch.Generator, env: PixelEnv
) -> None:
    set_rng_state(state, np_rng)
    aug_gen.set_state(state["augment"].cpu())
    env.set_random_state({k: v.cpu().numpy() for k, v in state["env"].items()})


EvalCallback = Callable[[dict[str, Any]], "bool | None"]
"""Called with every evaluation row as it is logged (env_step, episode_return, ...): how a sweep reports to Ray.
Returning ``False`` stops training there, cleanly: a checkpoint is written, and rerunning resumes from it."""


class Workspace:
    """Owns env, replay, agent and logger of one run; :meth:`run` trains to ``cfg.env_steps``.

    ``on_eval`` receives each evaluation row after it is written to the logs (see :data:`EvalCallback`)."""

    def __init__(self, cfg: C.TrainConfig, quiet: bool = False, on_eval: EvalCallback | None = None) -> None:
        C.validate(cfg)
        check_task(cfg.env.task)
        repeat = cfg.env.action_repeat or task_action_repeat(cfg.env.task)
        seed_phase = C.seed_env_steps(cfg, repeat)
        if cfg.env_steps <= seed_phase:
            raise ConfigError(
                f"--env-steps ({cfg.env_steps}) must exceed the seed phase ({seed_phase} env steps"
                f"{' = 1000 actions x action repeat' if cfg.seed_steps is None else ''}); lower --seed-steps"
            )
        self.cfg = cfg
        self.on_eval = on_eval
        self.stopped = False
        self.eta: RunEta | None = None
        self.device = resolve_device(cfg.device)
        self.run_dir = prepare_run_dir(cfg)
        remove_stale_temporaries(self.run_dir)
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        keep_freed_memory()
        torch.manual_seed(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        # Augmentation offsets are drawn on the CPU so the generator state resumes on any device.
        self.aug_gen = torch.Generator()
        self.aug_gen.manual_seed(cfg.seed)
        self.env = make_env(cfg, seed=cfg.seed)
        self.action_repeat = self.env.action_repeat
        self.seed_env_steps = C.seed_env_steps(cfg, self.action_repeat)
        # One extra frame per episode: its first observation has no incoming transition.
        episodes = cfg.replay_capacity // self.env.max_episode_steps + 2
        self.replay = FrameReplay(
            cfg.replay_capacity + episodes, self.env.frame_shape, self.env.action_dim, cfg.env.frame_stack
        )
        self.agent = make_agent(cfg, self.env.obs_shape, self.env.action_dim, self.device)
        self.state = LoopState()
        resumed = self._resume()
        # Without a checkpoint every earlier row is from a killed first attempt: start the logs afresh.
        wandb = None
        if cfg.wandb:

            wandb = WandbSink(self.run_dir, cfg.wandb_project, C.to_dict(cfg))
        self.logger = RunLogger(
            self.run_dir, resume_step=self.state.env_step if resumed else -1, quiet=quiet, wandb=wandb
        )

    # ------------------------------------------------------------------------------------------ checkpoints
    def _resume(self) -> bool:
        """Restore the newest checkpoint, if any; True when one was restored."""
        ckpt = find_checkpoint(self.run_dir)
        if ckpt is None:
            return False
        state = load_state(ckpt, map_location=self.device)
        if state.get("agent_name") != self.cfg.agent:
            raise CheckpointError(
                f"checkpoint {ckpt} belongs to agent {state.get('agent_name')!r}, not {self.cfg.agent!r}"
            )
        try:
            self.agent.load_state_dict(state["agent"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {ckpt} does not fit this agent: {first_line(exc)}"
            ) from exc
        replay_state = load_replay_state(ckpt)
        if replay_state is None:
            raise CheckpointError(f"checkpoint {ckpt} has no replay buffer")
        try:
            self.replay.load_state_dict(replay_state)
        except ValueError as exc:
            raise CheckpointError(f"replay buffer in {ckpt} does not fit this run: {exc}") from exc
        self.state = LoopState(
            **{k: (float(v) if k == "wall_seconds" else int(v)) for k, v in state["loop"].items()}
        )
        _set_rng_state(state["rng"], self.np_rng, self.aug_gen, self.env)
        return True

    def save(self) -> Path:
        """Checkpoint everything needed to resume (call at an episode boundary)."""
        state = {
            "agent_name": self.cfg.agent,
            "agent": self.agent.state_dict(),
            "loop": self.state.as_dict(),
            "rng": _rng_state(self.np_rng, self.aug_gen, self.env),
            "obs_shape": list(self.env.obs_shape),
            "action_dim": self.env.action_dim,
        }
        return save_checkpoint(
            self.run_dir, self.state.env_step, state, self.replay.state_dict(), keep=self.cfg.keep_checkpoints
        )

    # ------------------------------------------------------------------------------------------------- loop
    def _evaluate_and_log(self) -> bool:
        """Evaluate, log the row, and tell ``on_eval``; False when ``on_eval`` asks to stop."""
        s = self.state
        video = (
            self.run_dir / "videos" / f"eval_{s.env_step:08d}.mp4"
            if self.cfg.video and self.cfg.eval_episodes
            else None
        )
        # The agent's IMM example (source, target + keypoints, generated target) at every evaluation.
        figure = (
            self.run_dir / "figures" / f"imm_example_{s.env_step:08d}.png"
            if self.cfg.eval_episodes and self.agent.target_offset is not None
            else None
        )
        t0 = time.perf_counter()
        eval_seed = self.cfg.seed + EVAL_SEED_OFFSET + s.env_step
        bar = self.logger.console.task(f"eval at {s.env_step}", total=self.cfg.eval_episodes)

        def on_episode(index: int, episode_return: float) -> None:
            bar.update(completed=index + 1, info=f"return {episode_return:.1f}")

        try:
            result = evaluate_policy(self.agent, self.cfg, eval_seed, self.cfg.eval_episodes, video, figure, on_episode)
        finally:
            bar.done()
        eval_seconds = time.perf_counter() - t0
        if self.eta is not None:
            self.eta.evaluations.add(eval_seconds, 1)
        row = {
            "env_step": s.env_step,
            "agent_step": C.agent_steps(s.env_step, self.action_repeat),
            **result,
            "eval_seconds": round(eval_seconds, 3),
            "wall_hours": round((s.wall_seconds + self._elapsed()) / 3600, 5),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }
        self.logger.log_eval(row)
        if video is not None:
            self.logger.video_frames("eval/video_frames", video, s.env_step)
        if figure is not None:
            self.logger.image_file("eval/imm_example", figure, s.env_step)
        self.logger.print(
            f"eval  env_step {s.env_step:>8d} | return {result['episode_return']:7.1f} ± {result['episode_return_std']:.1f}"
            f" over {self.cfg.eval_episodes} episodes ({eval_seconds:.1f} s)"
        )
        s.next_eval = (s.env_step // self.cfg.eval_every + 1) * self.cfg.eval_every
        return self.on_eval is None or self.on_eval(row) is not False

    def _record_runtime(self) -> None:
        """Record where, how and with which code this (re)start runs (``runtime.jsonl``): results tables name the
        machine, the kprl version and the git commit."""
        record_start(
            self.run_dir,
            env_step=self.state.env_step,
            machine=describe_machine(self.device),
            cpu=cpu_identity(),
            device=str(self.device),
            threads=torch.get_num_threads(),
            precision=self.agent.precision,
            update_path=self.cfg.update_path,
            torch=torch.__version__,
        )

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t_start

    def _checkpoint(self) -> None:
        s = self.state
        for name, module in self.agent.modules().items():
            for pname, param in module.named_parameters():
                if not bool(torch.isfinite(param).all()):
                    raise TrainingError(
                        f"parameter {name}.{pname} is not finite at env step {s.env_step} (update {s.updates}); "
                        f"not saved: the last good checkpoint in {self.run_dir / 'checkpoints'} is kept"
                    )
        s.next_checkpoint = (s.env_step // self.cfg.checkpoint_every + 1) * self.cfg.checkpoint_every
        wall = s.wall_seconds
        s.wall_seconds = wall + self._elapsed()
        self.save()
        s.wall_seconds = wall

    def run(self) -> dict[str, Any]:
        """Train until ``cfg.env_steps``; returns a summary (final eval return, steps, wall time)."""
        cfg, s = self.cfg, self.state
        self._t_start = time.perf_counter()
        if s.env_step >= cfg.env_steps:
            self.logger.print(f"{self.run_dir}: already trained for {s.env_step} env steps; nothing to do")
            self.logger.close()
            return self._summary()
        resumed = s.env_step > 0
        self.logger.print(
            f"{cfg.agent} on {cfg.env.task}: {self.device}, {torch.get_num_threads()} threads, precision "
            f"{self.agent.precision}{' (auto)' if cfg.precision == 'auto' else ''}, {cfg.update_path} update path"
        )
        self._record_runtime()
        if resumed:
            self.logger.print(f"resuming {self.run_dir} from env step {s.env_step}")
            # --checkpoint-every may differ from the attempt that wrote the checkpoint.
            s.next_checkpoint = (s.env_step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        else:
            s.next_checkpoint = cfg.checkpoint_every
            self.logger.config(C.to_dict(cfg))
            if not self._evaluate_and_log():
                self.stopped = True
                self.logger.close()
                self.env.close()
                return self._summary()
        throughput = Throughput(s.env_step)
        last_print = s.env_step
        seed_agent_steps = C.agent_steps(self.seed_env_steps, self.action_repeat)
        burst_pending = cfg.seed_update_burst and s.updates == 0 and seed_agent_steps > 0
        self.eta = eta = RunEta(cfg.env_steps, self.seed_env_steps, cfg.eval_every,
                                burst_updates=seed_agent_steps if burst_pending else 0)  # fmt: skip
        bar = self.logger.console.task("train (env steps)", total=cfg.env_steps, completed=s.env_step)
        episode_clock = Stopwatch()
        updates_before_episode, burst_seconds = s.updates, 0.0
        # Per-metric sums and counts: the actor, alpha, targets and auxiliary losses are not updated every update,
        # so each metric is averaged over the updates that produced it.
        metric_sums: dict[str, float] = {}
        metric_counts: dict[str, int] = {}
        try:
            step = self.env.reset()
            self.replay.add_first(step.frame)
            episode_return, episode_len = 0.0, 0
            while s.env_step < cfg.env_steps:
                agent_step = C.agent_steps(s.env_step, self.action_repeat)
                if agent_step < seed_agent_steps:
                    action = self.np_rng.uniform(-1.0, 1.0, size=self.env.action_dim).astype(np.float32)
                else:
                    action = self.agent.act(step.obs, deterministic=False)
                if agent_step >= seed_agent_steps and (s.updates > 0 or len(self.replay) > 0):
                    burst = cfg.seed_update_burst and agent_step == seed_agent_steps and s.updates == 0
                    # pytorch_sac_ae does init_steps updates at once when the seed phase ends, all scheduled as
                    # the same step: each also updates actor and targets when that step is on their schedule
                    # (1000 seed actions is; an odd number of seed actions with updates every 2 is not).
                    burst_clock = Stopwatch()
                    burst_bar = self.logger.console.task("seed burst (updates)", total=seed_agent_steps) if burst else None
                    for done in range(1, (max(1, seed_agent_steps) if burst else 1) + 1):
                        batch = self.replay.sample(
                            cfg.batch_size,
                            self.np_rng,
                            target_offset=self.agent.target_offset,
                            device=self.device,
                        )
                        metrics = self.agent.update(
                            batch, seed_agent_steps if burst else s.updates, self.aug_gen
                        )
                        s.updates += 1
                        for key, value in metrics.items():
                            if not math.isfinite(value):
                                raise TrainingError(
                                    f"{key} became {value} at env step {s.env_step} (update {s.updates}); "
                                    f"the last good checkpoint in {self.run_dir / 'checkpoints'} is kept"
                                )
                            metric_sums[key] = metric_sums.get(key, 0.0) + value
                            metric_counts[key] = metric_counts.get(key, 0) + 1
                        if burst_bar is not None:
                            self._burst_progress(burst_bar, done, seed_agent_steps, burst_clock)
                    if burst_bar is not None:
                        burst_bar.done()
                        burst_seconds = burst_clock.lap()
                        eta.updates.add(burst_seconds, seed_agent_steps)
                        eta.burst_updates = 0
                step = self.env.step(action)
                self.replay.add(action, step.reward, step.discount, step.frame)
                s.env_step += self.action_repeat
                episode_return += step.reward
                episode_len += 1
                if not step.last:
                    continue
                # ---- episode boundary: log, evaluate, checkpoint, reset
                s.episode += 1
                rate = throughput.update(s.env_step)
                episode_seconds = episode_clock.lap() - burst_seconds
                learned = s.updates - updates_before_episode > (seed_agent_steps if burst_seconds else 0)
                (eta.learning if learned else eta.acting).add(episode_seconds, episode_len * self.action_repeat)
                updates_before_episode, burst_seconds = s.updates, 0.0
                eta_text = format_seconds(eta.seconds_left(s.env_step, self.action_repeat))
                bar.update(completed=s.env_step, info=f"return {episode_return:.1f} | ETA {eta_text}")
                row: dict[str, Any] = {
                    "env_step": s.env_step,
                    "agent_step": C.agent_steps(s.env_step, self.action_repeat),
                    "episode": s.episode,
                    "episode_return": episode_return,
                    "episode_length": episode_len * self.action_repeat,
                    "updates": s.updates,
                    "env_steps_per_second": round(rate, 2),
                    "wall_hours": round((s.wall_seconds + self._elapsed()) / 3600, 5),
                }
                row.update({k: v / metric_counts[k] for k, v in metric_sums.items()})
                self.logger.log_train(row)
                metric_sums, metric_counts = {}, {}
                if s.env_step - last_print >= cfg.log_every or s.env_step >= cfg.env_steps:
                    last_print = s.env_step
                    self.logger.print(
                        f"train env_step {s.env_step:>8d}/{cfg.env_steps} | episode {s.episode:>4d} "
                        f"| return {episode_return:7.1f} | {rate:6.1f} env steps/s | ETA {eta_text}"
                    )
                if s.env_step >= s.next_eval or s.env_step >= cfg.env_steps:
                    self.stopped = not self._evaluate_and_log()
                if s.env_step >= s.next_checkpoint or s.env_step >= cfg.env_steps or self.stopped:
                    self._checkpoint()
                episode_clock.lap()  # evaluation and checkpoint time is counted apart
                if s.env_step >= cfg.env_steps or self.stopped:
                    if self.stopped:
                        self.logger.print(f"stopped by on_eval at env step {s.env_step}; rerun to resume")
                    break
                step = self.env.reset()
                self.replay.add_first(step.frame)
                episode_return, episode_len = 0.0, 0
            if not step.last:
                # The budget ended mid-episode: evaluate and checkpoint the end state as well.
                self._evaluate_and_log()
                self._checkpoint()
            s.wall_seconds += self._elapsed()
            if s.env_step >= cfg.env_steps:
                final = self.logger.eval_csv.rows[-1]
                self.logger.hparams(C.flatten(cfg), {"hparam/final_eval_return": float(final["episode_return"])})
        finally:
            bar.done()
            self.logger.close()
            self.env.close()
        return self._summary()

    def _burst_progress(self, bar: Task, done: int, total: int, clock: Stopwatch) -> None:
        """Progress of the seed burst after ``done`` updates: its bar on a terminal, a line every tenth elsewhere."""
        rate = done / max(clock.elapsed(), 1e-9)
        left = format_seconds((total - done) / rate)
        bar.update(completed=done, info=f"{rate:.2f} updates/s | {left} left")
        if not self.logger.console.live and done % max(1, total // 10) == 0:
            self.logger.print(f"seed burst {done}/{total} updates | {rate:.2f} updates/s | {left} left")

    def _summary(self) -> dict[str, Any]:
        rows = self.logger.eval_csv.rows
        return {
            "run_dir": str(self.run_dir),
            "env_steps": self.state.env_step,
            "final_eval_return": float(rows[-1]["episode_return"]) if rows else float("nan"),
            "wall_hours": self.state.wall_seconds / 3600,
            "stopped_by_callback": self.stopped,
        }


def train(cfg: C.TrainConfig, quiet: bool = False, on_eval: EvalCallback | None = None) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; the Python entry point behind ``kprl train``.

    ``on_eval`` is called with each evaluation row as it is logged. Returns the summary of :meth:`Workspace.run`
    (run_dir, env_steps, final_eval_return, wall_hours)."""
    return Workspace(cfg, quiet=quiet, on_eval=on_eval).run()
