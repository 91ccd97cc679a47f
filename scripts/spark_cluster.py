"""A Spark standalone cluster on 127.0.0.1 for tests and benchmarks: a master and workers in JVMs of their own, started
with the pyspark package's own `spark-class`, as a real deployment has them (not local mode, where the
executors live in the driver's JVM and share its working folder)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandaloneCluster:
    """`with StandaloneCluster(folder, workers=2, cores=1) as cluster:` cluster.url is spark://127.0.0.1:PORT."""

    def __init__(self, folder, workers: int = 2, cores: int = 1, memory: str = "1g"):
        import pyspark

        self.home = os.path.dirname(pyspark.__file__)
        self.folder, self.workers, self.cores, self.memory = str(folder), workers, cores, memory
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ, SPARK_HOME=self.home, SPARK_LOCAL_IP="127.0.0.1",
                        SPARK_LOG_DIR=os.path.join(self.folder, "logs"), SPARK_NO_DAEMONIZE="1",
                        # no REST submission server (its fixed port 6066 would clash), UIs on free ports
                        SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false")

    def _start(self, name: str, *args: str) -> str:
        log = os.path.join(self.folder, f"{name}.log")
        with open(log, "w") as fh:
            self.procs.append(subprocess.Popen([os.path.join(self.home, "bin", "spark-class"), *args], env=self.env,
                                               stdout=fh, stderr=subprocess.STDOUT, start_new_session=True))
        return log

    def _wait_for(self, log: str, pattern: str, count: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout  # a start-up bound only: no verdict depends on it
        while time.monotonic() < deadline:
            with open(log) as fh:
                if len(re.findall(pattern, fh.read())) >= count:
                    return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        with open(log) as fh:
            raise RuntimeError(f"the Spark standalone cluster did not start; see {log}:\n" + fh.read()[-3000:])

    def pids(self) -> list[int]:
        """The master's and workers' JVMs (executors run below the workers)."""
        return [p.pid for p in self.procs]

    def executor_logs(self) -> str:
        """Everything the executors wrote to stderr (under the workers' work folders)."""
        text = []
        for root, _, files in os.walk(self.folder):
            text += [open(os.path.join(root, f), errors="replace").read() for f in files if f == "stderr"]  # noqa: SIM115
        return "".join(text)

    def __enter__(self) -> StandaloneCluster:
        port = free_port()
        self.url = f"spark://127.0.0.1:{port}"
        master = self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                             "--port", str(port), "--webui-port", str(free_port()))
        try:
            self._wait_for(master, r"I have been elected leader", 1)
            for i in range(self.workers):
                work = os.path.join(self.folder, f"worker-{i}")
                os.makedirs(work, exist_ok=True)
                self._start(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                            "--cores", str(self.cores), "--memory", self.memory, "--webui-port", str(free_port()),
                            "--work-dir", work)
            self._wait_for(master, r"Registering worker", self.workers)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
