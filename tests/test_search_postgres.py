"""A search shared through a PostgreSQL server: two workers on one study finish N trials with N
distinct trial numbers and run no trial twice. The fixture starts a throwaway server (initdb in
a temporary folder, 127.0.0.1 on a free port, trust authentication) and stops it afterwards; the
test is skipped, saying why, when no server can be started here."""
from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from lvmkit import LvmkitError
from lvmkit.search import run_search
from test_search import _space, assert_shared_study


def _binary(name: str) -> str | None:
    # Debian keeps the server's programs in /usr/lib/postgresql/VERSION/bin, off PATH.
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """The URL of a fresh PostgreSQL server on 127.0.0.1 (user postgres, no password)."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (Debian: apt-get install postgresql)")
    driver = next((d for d in ("psycopg", "psycopg2") if importlib.util.find_spec(d)), None)
    if driver is None:
        pytest.skip("no PostgreSQL driver for SQLAlchemy is installed (pip install 'lvmkit[postgres]')")
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the postgres user
        runuser = shutil.which("runuser")
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            runuser = None
        if runuser is None:
            pytest.skip("running as root, and there is no 'postgres' user or runuser to start the server as")
        as_user = [runuser, "-u", "postgres", "--"]
    folder = tempfile.mkdtemp(prefix="lvmkit-pg-")
    if as_user:
        shutil.chown(folder, "postgres")
    data, log, port = os.path.join(folder, "data"), os.path.join(folder, "log"), _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c fsync=off"

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)

    try:
        made = run(initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        if made.returncode:
            pytest.skip(f"initdb failed: {(made.stderr or made.stdout).strip().splitlines()[-1:]}")
        started = run(pg_ctl, "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")
        if started.returncode:
            tail = Path(log).read_text().strip().splitlines()[-1:] if Path(log).exists() else started.stderr
            pytest.skip(f"the PostgreSQL server did not start: {tail}")
        yield f"postgresql+{driver}://postgres@127.0.0.1:{port}/postgres"
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            run(pg_ctl, "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_a_postgres_study(postgres_url, tmp_path):
    study = run_search(_space(tmp_path), trials=4, workers=2, storage=postgres_url, out=tmp_path / "pg")
    assert_shared_study(study, tmp_path / "pg", 4)
    again = run_search(resume=tmp_path / "pg")  # the study lives in the server: resume finds it finished
    assert [t.number for t in again.trials] == [t.number for t in study.trials]


def test_a_second_machine_joins_the_study_and_no_password_is_written(postgres_url, tmp_path):
    secret = postgres_url.replace("://postgres@", "://postgres:s3cret@")  # trust auth: the server ignores it
    first = run_search(_space(tmp_path), trials=2, storage=secret, study="join", out=tmp_path / "a")
    # the same command on "another machine": same space, storage and study name, its own folder
    joined = run_search(_space(tmp_path), trials=4, storage=secret, study="join", out=tmp_path / "b")
    assert sorted(t.number for t in joined.trials) == [0, 1, 2, 3]
    assert [t.state.name for t in joined.trials] == ["COMPLETE"] * 4
    assert len(list((tmp_path / "a" / "trials").iterdir())) == 2 and len(list((tmp_path / "b" / "trials").iterdir())) == 2
    assert first.study_name == joined.study_name
    for d in ("a", "b"):
        assert "s3cret" not in (tmp_path / d / "study.json").read_text()
    with pytest.raises(LvmkitError, match=r"--storage names the postgresql server at host '127.0.0.1'.*but"):
        run_search(resume=tmp_path / "b", storage=secret.replace("/postgres", "/other").replace("5432", "1"))
