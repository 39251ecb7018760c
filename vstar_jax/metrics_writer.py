"""Scalar metrics to absl logs, a JSONL file and TensorBoard event files.

Only process 0 writes files (every process logs to absl), as flax's lm1b
does with clu; TensorBoard files go through tensorboardX, a maintained writer,
so no TensorFlow is needed.
"""
import json
import os
from typing import Mapping, Optional

from absl import logging
import numpy as np


class MetricWriter:
  """write_scalars(step, scalars): the clu metric-writer interface."""

  def __init__(self, logdir: Optional[str], *, enabled: bool = True):
    self._jsonl = None
    self._tb = None
    if logdir and enabled:
      os.makedirs(logdir, exist_ok=True)
      self._jsonl = open(os.path.join(logdir, 'metrics.jsonl'), 'a')
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(logdir=os.path.join(logdir, 'tensorboard'))

  def write_scalars(self, step: int, scalars: Mapping[str, float],
                    prefix: str = '') -> None:
    values = {f'{prefix}{k}': float(np.asarray(v)) for k, v in
              scalars.items()}
    logging.info('step %d: %s', step, ', '.join(
        f'{k}={v:.5g}' for k, v in sorted(values.items())))
    if self._jsonl is not None:
      self._jsonl.write(json.dumps({'step': int(step), **values}) + '\n')
      self._jsonl.flush()
    if self._tb is not None:
      for k, v in values.items():   # TensorBoard tags cannot contain '@'
        self._tb.add_scalar(k.replace('@', '_at_'), v, int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None
