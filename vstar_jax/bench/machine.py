"""What machine a benchmark ran on, and how busy the rest of it was.

`describe_machine` goes into every result file. `CpuShare` measures the CPU
time that *other* processes used during a run (from /proc/stat minus this
process's own CPU time), so a result taken on a shared machine says so.
"""
import dataclasses
import datetime
import os
import platform
import time

import jax
import jaxlib


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def describe_machine() -> dict:
  """CPU model, core counts, jax version/backend/devices and the UTC time."""
  return {
      'cpu_model': _cpu_model(),
      'num_cpus': os.cpu_count(),
      'num_cpus_usable': len(os.sched_getaffinity(0)),
      'jax_version': jax.__version__,
      'jaxlib_version': jaxlib.__version__,
      'backend': jax.default_backend(),
      'devices': [f'{d.platform}:{d.device_kind}' for d in jax.devices()],
      'python': platform.python_version(),
      'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'load_avg_1_5_15': [round(x, 2) for x in os.getloadavg()],
  }


def _busy_cpu_seconds() -> float:
  """CPU-seconds all processes spent busy since boot (/proc/stat)."""
  with open('/proc/stat', encoding='utf-8') as f:
    fields = [int(x) for x in f.readline().split()[1:]]
  # user nice system idle iowait irq softirq steal ...; idle, iowait idle.
  busy = sum(fields[:8]) - fields[3] - fields[4]
  return busy / os.sysconf('SC_CLK_TCK')


def _own_cpu_seconds() -> float:
  t = os.times()
  return t.user + t.system + t.children_user + t.children_system


@dataclasses.dataclass
class CpuShare:
  """Context manager: fraction of all cores used by other processes.

  After the block, `other_share` is (busy CPU-seconds of the machine minus
  this process's) / (wall seconds x cores): 0 on an idle machine, 1 when
  other processes kept every core busy.
  """
  other_share: float | None = None
  wall_s: float | None = None

  def __enter__(self) -> 'CpuShare':
    self._start = (time.perf_counter(), _busy_cpu_seconds(),
                   _own_cpu_seconds())
    return self

  def __exit__(self, *exc) -> None:
    wall0, busy0, own0 = self._start
    self.wall_s = time.perf_counter() - wall0
    other = (_busy_cpu_seconds() - busy0) - (_own_cpu_seconds() - own0)
    cores = len(os.sched_getaffinity(0))
    self.other_share = max(other, 0.0) / (self.wall_s * cores)
