# maxtext-distill: the two commands of the README. Each sets up .venv on a fresh machine first.
.PHONY: demo test test-families test-slow lint setup clean

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
		tests/integration/decoder_blocks_test.py

# Further recipes, the study and benchmark smoke runs and the long end-to-end checks (about 10 minutes on 2 cores).
test-slow: setup
	@JAX_PLATFORMS=cpu .venv/bin/python -m pytest -n 2 -q --slow -m slow tests

lint: setup
	@.venv/bin/pre-commit run --all-files

clean:
	rm -rf .venv build dist *.egg-info demo_output
