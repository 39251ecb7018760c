"""A stand-in for launch.train / launch.evaluate in tests/fleet_test.py.

  python -m tests.fleet_fake_job --workdir=DIR --mode=ok|fail|hang [...]

ok writes DIR/results.json (after --sleep=S seconds); fail exits 1; hang runs until SIGTERM, then
saves a fake best checkpoint and exits 75 (launch.train's preemption exit).
With --stage=S (the evaluate call) it writes DIR/eval_S.json. Every call
appends its arguments to DIR/calls.jsonl.
"""
import json
import os
import signal
import sys
import time


def main():
  args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if '=' in a)
  workdir = args['--workdir'[2:]]
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'calls.jsonl'), 'a') as f:
    f.write(json.dumps(sys.argv[1:]) + '\n')
  if 'stage' in args:
    with open(os.path.join(workdir, f'eval_{args["stage"]}.json'), 'w') as f:
      json.dump({'stage': args['stage']}, f)
    return 0
  mode = args['mode']
  if mode == 'fail':
    return 1
  if mode == 'hang':
    def on_term(*_):
      os.makedirs(os.path.join(workdir, 'checkpoints', 'sft', 'best', '7'))
      sys.exit(75)
    signal.signal(signal.SIGTERM, on_term)
    while True:
      time.sleep(0.1)
  time.sleep(float(args.get('sleep', 0)))
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump({'ok': True}, f)
  return 0


if __name__ == '__main__':
  sys.exit(main())
