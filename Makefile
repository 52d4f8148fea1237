# Two commands set everything up on a fresh machine:  make run  (the main job)  and  make test  (the fast suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export MUJOCO_GL ?= egl

# The main job (~18 min on 2 CPU cores): a short run of the poster's keypoint agent (SAC+AE+IMM, random crop) on
# cartpole swingup, then its figures: learning curve, eval videos with keypoints drawn, the agent's IMM examples.
RUN_DIR   ?= runs/main
RUN_ARGS  ?= --agent sac_ae_imm --augmentation crop --task cartpole_swingup --seed 1 --env-steps 5000 --seed-steps 1000 \
             --eval-every 1000 \
             --checkpoint-every 1000 --eval-episodes 3

.PHONY: setup run test test-slow bench lint clean grid grid-status harvest

# torch is installed first and pinned: on a CPU machine this takes the CPU wheel; a bare `torch` resolved by pip
# would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,sweep,gym,wandb]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/kprl train $(RUN_ARGS) --run-dir $(RUN_DIR)
	$(BIN)/kprl plot --run-dir $(RUN_DIR)
	@echo "run dir:        $(RUN_DIR)"
	@echo "learning curve: $(RUN_DIR)/curves.png  (data: $(RUN_DIR)/eval.csv, $(RUN_DIR)/train.csv)"
	@echo "eval videos:    $(RUN_DIR)/videos/  (keypoints drawn)"
	@echo "IMM examples:   $(RUN_DIR)/figures/imm_example_<env step>.png"
	@echo "tensorboard:    $(BIN)/tensorboard --logdir $(RUN_DIR)/tb"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

# The experiment grid (docs/grid.md): start what fits the hours this machine has left, in the background; see
# where it stands; copy the runs' logs into results/ and regenerate the report (commit them before the machine goes).
GRID  ?= experiments/cartpole_100k.toml
HOURS ?= 2.5
FILL  ?= 0
ONLY  ?=
grid: $(STAMP)
	$(BIN)/kprl grid run $(GRID) --hours $(HOURS) $(if $(filter 1,$(FILL)),--fill) $(foreach job,$(ONLY),--only $(job))

grid-status: $(STAMP)
	$(BIN)/kprl grid status $(GRID)

harvest: $(STAMP)
	$(BIN)/kprl grid harvest $(GRID)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
