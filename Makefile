# maxtext-distill: the two commands of the README. Each sets up .venv on a fresh machine first.
.PHONY: demo test test-families test-slow test-upstream lint setup clean bench-check

# Tools that cache under $HOME (pylint, gcloud's config that Google libraries create on import, matplotlib's font list)
# cache inside the clone instead: a run leaves nothing outside it.
export PYLINTHOME := $(CURDIR)/.venv/cache/pylint
export CLOUDSDK_CONFIG := $(CURDIR)/.venv/cache/gcloud
export MPLCONFIGDIR := $(CURDIR)/.venv/cache/matplotlib

setup:
	@bash tools/bootstrap.sh

demo: setup
	@.venv/bin/python -m maxtext_distill_plugin.demo

test: setup
	@JAX_PLATFORMS=cpu .venv/bin/python -m pytest -n 2 -q tests

# The documented command on tiny versions of all ten model families (about 2 minutes each on 2 cores).
test-families: setup
	@JAX_PLATFORMS=cpu .venv/bin/python -m pytest -n 2 -q --families tests/integration/model_family_test.py

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
