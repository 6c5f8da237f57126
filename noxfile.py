"""nox sessions of eosbench.

    nox -s smoke                      # the main job: reproduce the smoke suite on CPU (~4-5 min, 2 cores)
    nox -s tests                      # the test suite (fast + slow tiers)
    nox -s lint                       # ruff
    nox -s tests_vision               # the torchvision tests (the vision extra, its own torch)
    nox -s reproduce -- --suite NAME  # any suite; arguments go to `eosbench reproduce`
    nox -s paper                      # build paper/ into a PDF when TeX is installed

Sessions install torch as ``torch==2.13.0`` (override with EOSBENCH_TORCH_SPEC); the
package itself accepts a range.  On a machine that cannot install packages (a GPU box
with torch already present) run ``nox --no-venv -s reproduce -- ...``: sessions then use
the current interpreter and install nothing.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("EOSBENCH_TORCH_SPEC", "torch==2.13.0")
# torchvision needs a matching torch: this pair works on x86_64 CPU machines here (a 5.5 GB
# CUDA build that runs on the CPU); on aarch64 `torch==2.9.1 torchvision==0.24.1`
VISION = os.environ.get("EOSBENCH_VISION_SPEC", "torch==2.14.1 torchvision==0.29.1")


def _install(session: nox.Session, *extras: str) -> None:
    if session.venv_backend == "none" or isinstance(
        session.virtualenv, nox.virtualenv.PassthroughEnv
    ):
        session.log("no virtualenv: using the current interpreter's packages")
        session.env["PYTHONPATH"] = os.getcwd()
        return
    session.install(TORCH)
    spec = ".[" + ",".join(extras) + "]" if extras else "."
    session.install("-e", spec)


@nox.session
def tests(session: nox.Session) -> None:
    """pytest: fast and slow tiers (pass e.g. ``-- -m 'not slow'`` for the fast tier)."""
    _install(session, "test", "cluster")  # cluster: submitit, for tests/test_executor.py
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]))


@nox.session
def tests_vision(session: nox.Session) -> None:
    """The torchvision model family and data readers (``eosbench[vision]``), in their own
    environment: torchvision pins its torch (``VISION``), the other sessions keep ``TORCH``."""
    if session.venv_backend != "none":
        session.install(*VISION.split())
        session.install("-e", ".[test,vision]")
    # one thread: on a small CPU, ResNet-18's Hessian-vector products are many times slower
    # with two threads than with one (a registry task: 42 s against over 9 minutes here)
    session.env.setdefault("OMP_NUM_THREADS", "1")
    if session.posargs:
        session.run("python", "-m", "pytest", *session.posargs)
        return
    session.run("python", "-m", "pytest", "-q", "tests/test_vision.py", "tests/test_models.py",
                "tests/test_hub.py")
    # the torchvision model with every optimizer and loss, and the registered ResNet-18 SGD
    # task (42 s here; with its SAM and TRACER siblings the three had not finished after 15
    # minutes on the 2-core CPU: those two are left to the GPU)
    session.run("python", "-m", "pytest", "-q", "tests/test_combinations.py",
                "tests/test_registry_tasks.py", "-k",
                "torchvision or (resnet18 and sgd and not tracer)")


@nox.session
def lint(session: nox.Session) -> None:
    if session.venv_backend != "none":
        session.install("ruff==0.17.6")
    session.run("ruff", "check", "eosbench", "tests", "benchmarks", "scripts", "noxfile.py")


@nox.session
def smoke(session: nox.Session) -> None:
    """The main job: the smoke suite on CPU with the embedded digits data."""
    _install(session)
    session.run(
        "python",
        "-m",
        "eosbench",
        "reproduce",
        "--suite",
        "smoke",
        "--device",
        "cpu",
        "--out",
        "runs/smoke",
        "--jobs",
        str(min(4, os.cpu_count() or 1)),  # parallel runs, one torch thread pool each
        *session.posargs,
    )


@nox.session
def reproduce(session: nox.Session) -> None:
    """Any suite, on the GPU when present: ``nox -s reproduce -- --suite cohen2021``
    (``-- --executor slurm ...`` submits it to a Slurm cluster)."""
    _install(session, "cluster")
    args = session.posargs or ["--suite", "smoke"]
    session.run("python", "-m", "eosbench", "reproduce", *args)


@nox.session
def paper(session: nox.Session) -> None:
    """Build paper/main.tex into paper/main.pdf (needs latexmk or pdflatex + bibtex)."""
    if shutil.which("latexmk"):
        session.run(
            "latexmk", "-pdf", "-interaction=nonstopmode", "-cd", "paper/main.tex", external=True
        )
    elif shutil.which("pdflatex"):
        for cmd in (["pdflatex"], ["bibtex"], ["pdflatex"], ["pdflatex"]):
            arg = "main" if cmd == ["bibtex"] else "main.tex"
            session.run(
                *cmd,
                *(["-interaction=nonstopmode"] if cmd != ["bibtex"] else []),
                arg,
                external=True,
                env={"TEXINPUTS": ".:"},
                success_codes=[0, 1],
            )
    else:
        session.error(
            "no TeX installation: install one (Debian: apt-get install latexmk "
            "texlive-latex-extra texlive-science) and run `nox -s paper` again"
        )
