"""Times create-from-image and delete through the whole Cinder stack (scripts/cinder-stack.sh).

Operations, as an operator runs them, on the ember-lvm backend (volume_clear = zero):
  create  `cinder create --volume-type ember-lvm --image-id IMG 1`, IMG a 1 GiB qcow2 with 10%
          data (random 1 MiB pieces), until the volume is `available`;
  delete  `cinder delete VOL` of a 4 GiB volume (that image written into it), until it is gone.
Each is timed from the client command's start to the state seen by polling the REST API every
50 ms (the bench's own poll: an operator's `cinder show` loop adds its own interval). The
volume service's log then splits the time: when cinder-volume picked the request up, Cinder's
own image fetches (`Image fetch details` lines), each `ember volume ...` command (processutils'
`returned: 0 in X s`) and the end (`Created/Deleted volume successfully`). Every created volume
is checked (its LV bytes equal `qemu-img convert -O raw` of the image, zeros after).
Page caches are not dropped (the machine is shared): the image stays cached after the first run.

Usage (root, the stack up): build/cinder-stack/venv/bin/python bench/cinder/stack_bench.py [RUNS]
Prints every run's phases, then the medians.
"""

import datetime
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'cinder'))
# The scenarios' helpers: the clients' environment, tables, a volume's bytes on the backend.
import test_stack as stack  # noqa: E402

S = stack.S
WORK = os.path.join(S, 'bench')
VOLUME_LOG = os.path.join(S, 'logs', 'cinder-volume.log')
GIB = 1 << 30
MIB = 1 << 20
POLL = 0.05


ENV = stack.ENV


def run(*argv):
    p = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit('%s failed: %s%s' % (' '.join(argv), p.stdout, p.stderr))
    return p.stdout


def field(out, key):
    return stack.table(out)[key]


def api_volume(vol):
    """The volume as the REST API returns it (noauth: token user:project; no project in the
    path since microversion 3.67), None when gone."""
    url = '%s/volumes/%s' % (ENV['CINDER_ENDPOINT'], vol)
    req = urllib.request.Request(url, headers={
        'X-Auth-Token': '%s:%s' % (ENV['OS_USER_ID'], ENV['OS_PROJECT_ID']),
        'OpenStack-API-Version': 'volume %s' % ENV['OS_VOLUME_API_VERSION'],
        'Accept': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)['volume']
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def wait(vol, gone=False, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        v = api_volume(vol)
        if gone and v is None:
            return time.time()
        if v is not None:
            if v['status'].startswith('error'):
                raise SystemExit('volume %s is %s' % (vol, v['status']))
            if not gone and v['status'] == 'available':
                return time.time()
        time.sleep(POLL)
    raise SystemExit('volume %s: timeout' % vol)


def scatter(path, size, fraction, seed):
    rnd = random.Random(seed)
    with open(path, 'wb') as f:
        f.truncate(size)
        chunks = size // MIB
        for c in sorted(rnd.sample(range(chunks), int(chunks * fraction))):
            f.seek(c * MIB)
            f.write(rnd.randbytes(MIB))


# ---------------------------------------------------------------- the volume service's log

# Timestamp, then the context: `[None req-L ...` or `[req-GLOBAL req-L ...`; L is the request.
LINE = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \d+ \w+ \S+ '
                  r'\[(?:None |req-\S+ )?(req-[0-9a-f-]+) ')
CMD_DONE = re.compile(r'CMD "(\S*/ember volume .*?)" returned: \d+ in ([\d.]+)s')


def stamp(text):
    return time.mktime(datetime.datetime.strptime(text, '%Y-%m-%d %H:%M:%S.%f').timetuple()) + \
        int(text[-3:]) / 1000.0


def phases(vol, since_offset):
    """What cinder-volume logged for `vol` after byte `since_offset` of its log: the first and
    last time of its request, image fetches, ember commands (name, seconds)."""
    with open(VOLUME_LOG) as f:
        f.seek(since_offset)
        lines = f.read().splitlines()
    req = None
    for line in lines:
        m = LINE.match(line)
        if m and vol in line:
            req = m.group(2)
            break
    if req is None:
        raise SystemExit('no request for %s in %s' % (vol, VOLUME_LOG))
    out = {'start': None, 'end': None, 'fetches': [], 'ember': []}
    for line in lines:
        m = LINE.match(line)
        if not m or m.group(2) != req:
            continue
        t = stamp(m.group(1))
        out['start'] = out['start'] or t
        out['end'] = t
        if 'Image fetch details' in line:
            out['fetches'].append(t)
        c = CMD_DONE.search(line)
        if c:
            words = c.group(1).split()
            # ember volume --config C --backend B OP ...
            op = words[words.index('--backend') + 2] if '--backend' in words else words[2]
            out['ember'].append((op, float(c.group(2)), t))
    return out


def log_size():
    return os.path.getsize(VOLUME_LOG)


# ---------------------------------------------------------------- runs

def check_volume(vol, expected_raw, size):
    """The LV's bytes, read from its PV extents, equal the image then zeros."""
    diff = stack.first_difference(stack.volume_runs(vol), expected_raw, size)
    if diff is not None:
        raise SystemExit('volume %s differs from the image at %s' % (vol, diff))


CREATED = []


def create(image, name, size):
    vol = field(run('cinder', 'create', '--volume-type', 'ember-lvm', '--image-id', image,
                    '--name', name, str(size)), 'id')
    CREATED.append(vol)
    return vol


def bench_create(image, expected_raw):
    off = log_size()
    t0 = time.time()
    vol = create(image, 'bench-create', 1)
    t_cli = time.time()
    t_done = wait(vol)
    time.sleep(0.5)  # the log's last lines of the request
    p = phases(vol, off)
    check_volume(vol, expected_raw, GIB)
    return vol, {'total': t_done - t0, 'cli': t_cli - t0, 'picked_up': p['start'] - t0,
                 'volume_service': p['end'] - p['start'],
                 'fetches': [round(t - p['start'], 2) for t in p['fetches']],
                 'ember': sum(s for _, s, _ in p['ember']),
                 'ember_ops': [(op, s) for op, s, _ in p['ember']],
                 'after_service': t_done - p['end']}


def bench_delete(image):
    vol = create(image, 'bench-delete', 4)
    wait(vol)
    assert api_volume(vol) is not None, 'the poll cannot see %s' % vol
    off = log_size()
    t0 = time.time()
    run('cinder', 'delete', vol)
    t_cli = time.time()
    t_done = wait(vol, gone=True)
    time.sleep(0.5)
    p = phases(vol, off)
    return {'total': t_done - t0, 'cli': t_cli - t0, 'picked_up': p['start'] - t0,
            'volume_service': p['end'] - p['start'],
            'ember': sum(s for _, s, _ in p['ember']),
            'ember_ops': [(op, s) for op, s, _ in p['ember']],
            'after_service': t_done - p['end']}


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    os.makedirs(WORK, exist_ok=True)
    raw = os.path.join(WORK, 'image.raw')
    qcow2 = os.path.join(WORK, 'image.qcow2')
    expected = os.path.join(WORK, 'image.expected.raw')
    scatter(raw, GIB, 0.10, 15)
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2], check=True)
    subprocess.run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', qcow2, expected],
                   check=True)
    os.remove(raw)
    image = field(run('glance', 'image-create', '--name', 'bench-1g-10pct', '--disk-format',
                      'qcow2', '--container-format', 'bare', '--file', qcow2), 'id')
    print('image %s: 1 GiB qcow2, %d MiB file' % (image, os.path.getsize(qcow2) >> 20))
    creates, deletes = [], []
    try:
        for i in range(runs):
            vol, c = bench_create(image, expected)
            run('cinder', 'delete', vol)
            wait(vol, gone=True)
            d = bench_delete(image)
            creates.append(c)
            deletes.append(d)
            print('run %d create %s' % (i + 1, json.dumps(c)))
            print('run %d delete %s' % (i + 1, json.dumps(d)))
    finally:
        for vol in CREATED:
            if api_volume(vol) is not None:
                subprocess.run(['cinder', 'delete', vol], env=ENV, capture_output=True)
        run('glance', 'image-delete', image)
        shutil.rmtree(WORK, ignore_errors=True)
    for name, rows in (('create --image-id (1 GiB qcow2, 10% data)', creates),
                       ('delete (4 GiB, volume_clear = zero)', deletes)):
        print('%s, median of %d: total %.2f s (client command %.2f s; picked up by '
              'cinder-volume after %.2f s; in cinder-volume %.2f s, of which ember %.2f s; '
              'seen by the poll %.2f s after its last log line)' % (
                  name, len(rows), median(rows, 'total'), median(rows, 'cli'),
                  median(rows, 'picked_up'), median(rows, 'volume_service'),
                  median(rows, 'ember'), median(rows, 'after_service')))


if __name__ == '__main__':
    main()
