# Vision Transformer Basics: the two set-up commands are `make lab` and `make test`.
# Both create the virtual environment in .venv first if it is missing or out of date.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch/torchvision for the venv. These two versions install from this course's build machines' disk;
# elsewhere any recent pair works, e.g. `make test TORCH="torch torchvision"`.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
# Tests run JOBS workers with one thread each: two busy cores with two threads per worker slow small models
# down many times over. Extra pytest arguments, e.g. `make test PYTEST_ARGS="-m task1_1"`.
PYTEST_ARGS ?=
# Extra JupyterLab arguments, e.g. `make lab LAB_ARGS=--allow-root` (as root in a container).
LAB_ARGS ?=
SUBMISSIONS ?= submissions
JOBS ?= 2

.PHONY: venv lab test test-fast release notebooks grade bench clean hub-deps

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (course)" >/dev/null
	touch $@

## lab: open the course in JupyterLab at the start page
lab: venv
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. $(LAB_ARGS) lectures/00_start_here.ipynb

## test: every test (unit, release, notebooks, grading, DDP)
test: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) $(PYTEST_ARGS)

## test-fast: the unit tests only (under a minute): tests/ without the slow ones, no instructor notebooks
test-fast: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

## release: build the student edition into dist/student and regenerate exercises/
release: venv
	$(PY) tools/release.py

## notebooks: refresh every notebook's Colab badge and set-up cell from course.toml
notebooks: venv
	$(PY) tools/notebooks.py

## grade: autograde a folder of submission zips or an LMS download (SUBMISSIONS=..., DEADLINE=...), feedback and grades.csv; earlier results are kept
grade: venv
	$(PY) -m course_grading.cli $(SUBMISSIONS) --jobs $(JOBS) $(if $(DEADLINE),--deadline "$(DEADLINE)") $(ARGS)

## hub-deps: JupyterHub (into .venv) and configurable-http-proxy (into .hub/) for tests/test_jupyterhub.py
hub-deps: venv
	$(PY) -m pip install --quiet 'jupyterhub>=5,<7'
	npm install --silent --no-audit --no-fund --prefix .hub configurable-http-proxy@5

## bench: benchmarks, written to benchmarks/results.json
bench: venv
	$(PY) -m benchmarks.run

clean:
	rm -rf dist build .pytest_cache
