"""Real servers for the scale-out tests: a throwaway PostgreSQL cluster and a redis-server, both
bound to 127.0.0.1 on free ports, started here and torn down after the session.

A missing server binary or Python library skips the test with the exact reason; under CI
(CI set in the environment) it fails instead, since .ci/run installs them
(deploy/ci-services.sh and the ``scale`` extra).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from distill_tests.ports import PortTaken, says_address_in_use, start_on_free_port

REPO = Path(__file__).resolve().parents[2]
SERVICES_SCRIPT = "deploy/ci-services.sh"


def unavailable(reason: str) -> None:
    """Skip with ``reason`` on a developer machine; fail under CI, where it must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see {SERVICES_SCRIPT})")
    pytest.skip(reason)


def need_module(name: str) -> None:
    try:
        __import__(name)
    except ImportError:
        unavailable(f"Python package {name} is not installed: pip install -e '.[scale]'")


def _pg_bindir() -> Path | None:
    """The directory of initdb, pg_ctl and createdb (Debian keeps them off PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db: str

    def env(self) -> dict[str, str]:
        """The variables deploy/dagster-postgres.yaml reads."""
        return {
            "DISTILL_PG_HOST": self.host,
            "DISTILL_PG_PORT": str(self.port),
            "DISTILL_PG_USER": self.user,
            "DISTILL_PG_PASSWORD": self.password,
            "DISTILL_PG_DB": self.db,
        }


def _as_owner(command: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *command] if owner else command


def _pg_owner() -> str | None:
    """Who runs the cluster: PostgreSQL refuses to run as root, so as root the cluster belongs
    to the postgres user (None: this user)."""
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None:
        unavailable("running as root and runuser is missing, so postgres cannot be started")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root and there is no postgres user to own the cluster")
    return "postgres"


class _Cluster:
    """A PostgreSQL cluster in the fresh directory ``base``, made by initdb with password auth,
    run by ``owner`` (as root) with the binaries of ``bindir``."""

    password = "distill-test-pw"

    def __init__(self, bindir: Path, owner: str | None, base: Path) -> None:
        self.bindir = bindir
        self.owner = owner
        self.base = base
        self.data = base / "data"
        self.log = base / "server.log"

    def init(self) -> None:
        """initdb, with the password in a file the owner can read."""
        if self.owner:
            shutil.chown(self.base, self.owner)
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        if self.owner:
            shutil.chown(pwfile, self.owner)
        subprocess.run(
            _as_owner(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "distill",
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                self.owner,
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self, port: int) -> Postgres:
        """pg_ctl start on ``port``; PortTaken when another process bound it first."""
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -k {self.base} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        log = self.log
        log.unlink(missing_ok=True)
        try:
            subprocess.run(
                _as_owner(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options]
                    + ["-l", str(log), "-w", "-t", "60", "start"],
                    self.owner,
                ),
                check=True,
                capture_output=True,
                timeout=90,
            )
        except subprocess.CalledProcessError as exc:
            if log.exists() and says_address_in_use(log.read_text()):
                raise PortTaken(log.read_text()[-500:]) from exc
            raise self.failed(exc) from exc
        return Postgres("127.0.0.1", port, "distill", self.password, "distill")

    def create_db(self, server: Postgres) -> None:
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", server.host, "-p", str(server.port)]
            + ["-U", server.user, server.db],
            check=True,
            capture_output=True,
            timeout=60,
            env={**os.environ, "PGPASSWORD": self.password},
        )

    def failed(self, exc: subprocess.CalledProcessError) -> RuntimeError:
        tail = self.log.read_text()[-2000:] if self.log.exists() else ""
        return RuntimeError(
            f"starting PostgreSQL failed: {exc.cmd[0]}: {exc.stderr.decode()[-2000:]}\n{tail}"
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                _as_owner(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                    self.owner,
                ),
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster made by initdb in a fresh directory, with password auth."""
    need_module("dagster_postgres")
    bindir = _pg_bindir()
    if bindir is None:
        unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under "
            "/usr/lib/postgresql/*/bin: install the Debian package postgresql"
        )
    cluster = _Cluster(bindir, _pg_owner(), Path(tempfile.mkdtemp(prefix="distill-pg-")))
    try:
        cluster.init()
        server = start_on_free_port(cluster.start)
        cluster.create_db(server)
    except subprocess.CalledProcessError as exc:
        error = cluster.failed(exc)
        cluster.stop()
        raise error from exc
    except BaseException:
        cluster.stop()
        raise
    try:
        yield server
    finally:
        cluster.stop()


@dataclass(frozen=True)
class Redis:
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A redis-server without persistence, bound to 127.0.0.1."""
    need_module("redis")
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server not found on PATH: install the Debian package redis-server")
    import redis

    workdir = tmp_path_factory.mktemp("redis")

    def start(port: int) -> tuple[subprocess.Popen, int]:
        """redis-server on ``port``, answering PING; PortTaken when another process bound the
        port first."""
        logfile = workdir / f"redis-{port}.log"
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
            + ["no", "--dir", str(workdir), "--protected-mode", "yes", "--logfile", str(logfile)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 30
        try:
            while True:
                if process.poll() is not None:  # exited: never take another server's PING
                    text = logfile.read_text() if logfile.exists() else ""
                    if says_address_in_use(text):
                        raise PortTaken(text[-500:])
                    raise RuntimeError(f"redis-server exited ({process.returncode}): {text[-999:]}")
                try:
                    if client.ping():
                        break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not answer within 30 s") from None
                    time.sleep(0.05)  # polling readiness, not synchronisation by time
        except BaseException:
            _stop(process)
            raise
        finally:
            client.close()
        return process, port

    process, port = start_on_free_port(start)
    try:
        yield Redis(port)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def postgres_home(directory: Path) -> Path:
    """A DAGSTER_HOME whose dagster.yaml is the project's PostgreSQL instance file."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster-postgres.yaml", directory / "dagster.yaml")
    return directory


FIXTURES = REPO / "fixtures" / "evidence"
FIRST_DAY, LAST_DAY = "2026-02-28", "2026-03-04"  # the fixtures' days, one either side
RECORDED_AT = "2026-03-10T00:00:00Z"


def materialize_range(
    instance,
    source: Path,
    output: str,
    staging: Path | None = None,
    assets: list[str] | None = None,
):
    """Materialize the whole graph over the fixtures' days (``FIRST_DAY...LAST_DAY``) in one
    in-process run (one backfill), or only the unpartitioned ``assets`` when given."""
    import dagster as dg

    from distill_assets.definitions import defs

    job = defs().resolve_implicit_global_asset_job_def()
    config: dict = {"source_dir": str(source), "output_dir": output}
    if staging is not None:
        config["staging_dir"] = str(staging)
    if assets is not None:
        return job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(name) for name in assets],
            run_config={"resources": {"distill": {"config": config}}},
            raise_on_error=False,
        )
    return job.execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": FIRST_DAY,
            "dagster/asset_partition_range_end": LAST_DAY,
        },
        run_config={"resources": {"distill": {"config": config}}},
        raise_on_error=False,
    )


DATA_TOPS = ("evidence", "scored-runs", "exports")  # what a reader sees; no run ids in paths
_RUN_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def masked(relpath: str, data: bytes) -> bytes:
    """A file's bytes for comparison across runs: a dataset card names the run that built its
    dataset (docs/datasets.md), so run ids in a card are masked; nothing else is."""
    from distill_assets.lib.constants import is_card

    return _RUN_ID.sub(b"<run-id>", data) if is_card(relpath) else data


def dataset_files(root: Path) -> dict[str, bytes]:
    """Every data file a reader of an output root sees (``exports`` through its link)."""
    found: dict[str, bytes] = {}
    for top in DATA_TOPS:
        base = (root / top).resolve()
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.is_file():
                relpath = f"{top}/{path.relative_to(base).as_posix()}"
                found[relpath] = masked(relpath, path.read_bytes())
    return found


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixtures' days materialized in one in-process run into a plain local directory."""
    import dagster as dg

    out = tmp_path_factory.mktemp("reference-out")
    previous = os.environ.get("DISTILL_RECORDED_AT")
    os.environ["DISTILL_RECORDED_AT"] = RECORDED_AT
    try:
        with dg.instance_for_test() as instance:
            assert materialize_range(instance, FIXTURES, str(out)).success
    finally:
        if previous is None:
            os.environ.pop("DISTILL_RECORDED_AT")
        else:
            os.environ["DISTILL_RECORDED_AT"] = previous
    return out


@pytest.fixture(scope="session")
def recorded_checks(project_defs) -> int:
    """How many check verdicts a full run records in its summary: every check but ``drift``,
    which the asset reports itself."""
    graph = project_defs.resolve_asset_graph()
    return sum(1 for key in graph.asset_check_keys if key.name != "drift")
