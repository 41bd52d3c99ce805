# maxtext-distill: the two commands of the README. Each sets up .venv on a fresh machine first.
.PHONY: demo test test-families test-slow test-upstream lint setup clean bench-check plan-example test-scale test-gpu-aot

# Tools that cache under $HOME (pylint, gcloud's config that Google libraries create on import, matplotlib's font list,
# Hugging Face datasets' processed local files)
# cache inside the clone instead: a run leaves nothing outside it.
export PYLINTHOME := $(CURDIR)/.venv/cache/pylint
export CLOUDSDK_CONFIG := $(CURDIR)/.venv/cache/gcloud
export MPLCONFIGDIR := $(CURDIR)/.venv/cache/matplotlib
export HF_HOME := $(CURDIR)/.venv/cache/huggingface

setup:
	@bash tools/bootstrap.sh

demo: setup
	@.venv/bin/python -m maxtext_distill_plugin.demo

test: setup
	@JAX_PLATFORMS=cpu .venv/bin/python -m pytest -n 2 -q tests

# The documented command on tiny versions of all ten model families (about 2 minutes each on 2 cores) and on every
# decoder block MaxText ships (decoder_blocks_test.py: about 4 minutes a block).
test-families: setup
	@JAX_PLATFORMS=cpu .venv/bin/python -m pytest -n 2 -q --families tests/integration/model_family_test.py \
		tests/integration/decoder_blocks_test.py tests/integration/sampling_families_test.py

# Further recipes, the study and benchmark smoke runs and the long end-to-end checks (about 10 minutes on 2 cores).
test-slow: setup
	@JAX_PLATFORMS=cpu .venv/bin/python -m pytest -n 2 -q --slow -m slow tests

# Step-time regression guard: the benchmark at vocab 32768, seq 256 (a few minutes on 2 idle cores); fails when a
# lean or dense / floor ratio exceeds docs/benchmarks.md's by more than 15% (tools/bench_check.py --margin).
bench-check: setup
	@.venv/bin/python tools/bench_check.py --shapes 32768x256 --rounds 4 --margin 0.15

# MaxText's own distillation unit tests, taken from a MaxText git repository at the commit matching the installed
# wheel, run with the plugin installed and without it: the same pass/fail per test (about 3 minutes on 2 cores).
MAXTEXT_REPO ?= /work/.mirror/AI-Hypercomputer+maxtext/repo
test-upstream: setup
	@.venv/bin/python tools/run_upstream_tests.py --repo "$(MAXTEXT_REPO)"

# PRE_COMMIT_HOME keeps pre-commit's own cache inside the clone (nothing is cached outside it).
lint: setup
	@PRE_COMMIT_HOME=.venv/pre-commit-home .venv/bin/pre-commit run --all-files

clean:
	rm -rf .venv build dist *.egg-info demo_output

# Compiling for a TPU topology on this machine needs libtpu (the tpu-aot extra). It goes into its own environment,
# .venv-tpu, which sees .venv's pinned set and adds libtpu, so .venv (make demo, make test) never probes for a TPU.
.venv-tpu/.ready: setup
	@test -x .venv-tpu/bin/python || "$$(sed -n 's/^executable = //p' .venv/pyvenv.cfg)" -m venv .venv-tpu
	@echo "import site; site.addsitedir('$$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
		> "$$(.venv-tpu/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_maxtext_distill_base.pth"
	@.venv-tpu/bin/python -m pip install --quiet --disable-pip-version-check --no-deps libtpu==0.0.50.1
	@touch $@

# Will the shipped recipe (llama3.1-8b teacher, Llama-3.2-1B-shaped student) fit a v5p-8? About 2 compiles of 100 s.
plan-example: .venv-tpu/.ready
	@.venv-tpu/bin/python -m maxtext_distill_plugin.plan distillation.yml \
		student_overrides.base_emb_dim=2048 student_overrides.base_mlp_dim=8192 \
		student_overrides.base_num_decoder_layers=16 student_overrides.base_num_query_heads=32 \
		student_overrides.head_dim=64 student_overrides.override_model_config=True compile_topology=v5p-8 --search none --json plan-example.json

# The planner on a tiny config for v5p-8 through libtpu: no [B, S, V] buffer, no vocabulary-sized collective in a loop.
test-scale: .venv-tpu/.ready
	@JAX_PLATFORMS=cpu .venv-tpu/bin/python -m pytest -q -p no:randomly --scale tests/integration/plan_scale_test.py

# Compiling for NVIDIA GPUs (h100-N, h200-N) needs JAX's CUDA plugin (the gpu-aot extra), in its own environment too.
.venv-gpu/.ready: setup
	@test -x .venv-gpu/bin/python || "$$(sed -n 's/^executable = //p' .venv/pyvenv.cfg)" -m venv .venv-gpu
	@echo "import site; site.addsitedir('$$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
		> "$$(.venv-gpu/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_maxtext_distill_base.pth"
	@.venv-gpu/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		jax-cuda12-plugin==0.12.0.1 jax-cuda12-pjrt==0.12.0.1
	@touch $@

# The planner on a tiny config for an 8-GPU H100 host through JAX's CUDA plugin, no GPU: same checks as test-scale.
test-gpu-aot: .venv-gpu/.ready
	@JAX_PLATFORMS=cpu .venv-gpu/bin/python -m pytest -q -p no:randomly --scale tests/integration/plan_gpu_test.py
