# maxtext-distill: the two commands of the README. Each sets up .venv on a fresh machine first.
.PHONY: demo test test-families test-slow lint setup clean bench-check

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

lint: setup
	@.venv/bin/pre-commit run --all-files

clean:
	rm -rf .venv build dist *.egg-info demo_output
