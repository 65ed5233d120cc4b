"""Times the Cinder driver's data-path operations against Cinder's generic paths, in one run.

Through cinderlib (Cinder 29's driver calls, file backend, volume_clear = zero):
  create-from-image  1 GiB qcow2, 10% data: EmberVolumeDriver.copy_image_to_volume (fetch,
                     inspect, write) vs Cinder's generic path: the same fetch, then
                     `qemu-img convert -O raw -t none` onto the volume's file;
  image-write        the same without the fetch (both read the fetched file): the data path
                     alone;
  clone              4 GiB volume, 10% data: create_cloned_volume vs Cinder's copy_volume
                     (`dd ... bs=1M iflag=count_bytes,direct oflag=direct conv=sparse`);
  delete             4 GiB volume with volume_clear = zero: delete_volume vs Cinder's clear
                     (`dd if=/dev/zero ... bs=1M oflag=direct`) + rm.
Caches are dropped before each timed operation; every result is checked (cmp / zeros).
Usage (root): build/cinder-venv/bin/python bench/cinder/driver_bench.py [RUNS]
Prints one line per case with the medians and the ratio ember / generic.
"""

import os
import random
import shutil
import statistics
import subprocess
import sys
import time

import cinderlib
from cinderlib import persistence

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
WORK = os.path.join(ROOT, 'build', 'cinder-bench')
EMBER = os.path.join(ROOT, 'build', 'release', 'ember')
GIB = 1 << 30
MIB = 1 << 20


def sh(*argv):
    subprocess.run(argv, check=True, capture_output=True)


def drop_caches():
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3')


def timed(fn):
    drop_caches()
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def scatter(path, size, fraction, seed):
    """A sparse file with `fraction` of it random data in 1 MiB pieces."""
    rnd = random.Random(seed)
    with open(path, 'wb') as f:
        f.truncate(size)
        chunks = size // MIB
        for c in rnd.sample(range(chunks), int(chunks * fraction)):
            f.seek(c * MIB)
            f.write(rnd.randbytes(MIB))


class ImageService(object):
    def __init__(self, path):
        self.path = path

    def show(self, context, image_id):
        return {'id': image_id, 'disk_format': 'qcow2',
                'container_format': 'bare'}

    def download(self, context, image_id, data):
        with open(self.path, 'rb') as f:
            shutil.copyfileobj(f, data, 8 * MIB)


def main(runs):
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    os.environ['PATH'] = os.path.dirname(EMBER) + ':' + os.environ['PATH']
    raw_img = os.path.join(WORK, 'image.raw')
    qcow = os.path.join(WORK, 'image.qcow2')
    scatter(raw_img, GIB, 0.10, 1)
    sh('qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw_img, qcow)
    persistence.setup = (lambda orig: lambda c: orig(
        dict(c, storage='memory') if c.get('storage') == 'memory_db'
        else c))(persistence.setup)
    cinderlib.setup(root_helper='env', disable_logs=True,
                    persistence_config={'storage': 'memory'})
    from cinder import context
    from oslo_config import cfg
    cfg.CONF.set_override('image_conversion_dir', os.path.join(WORK, 'conv'))
    data_dir = os.path.join(WORK, 'ember')
    be = cinderlib.Backend(volume_backend_name='bench',
                           volume_driver='ember_cinder.driver.'
                                         'EmberVolumeDriver',
                           ember_backend='file', ember_binary=EMBER,
                           ember_data_dir=data_dir, ember_connection='local',
                           volume_clear='zero')
    drv = be.driver
    ctx = context.get_admin_context()
    service = ImageService(qcow)

    def vol_file(v):
        return os.path.join(data_dir, 'data', 'volume-%s.raw' % v.id)

    results = {'create-from-image': ([], []), 'image-write': ([], []),
               'clone': ([], []),
               'delete': ([], [])}
    from cinder.image import image_utils
    for _ in range(runs):
        # create-from-image
        v = be.create_volume(1)
        results['create-from-image'][0].append(timed(
            lambda: drv.copy_image_to_volume(ctx, v._ovo, service, 'img')))
        sh('cmp', vol_file(v), raw_img)
        g = os.path.join(WORK, 'generic-image.raw')
        open(g, 'wb').truncate(GIB)

        def generic_image():
            with image_utils.temporary_file(prefix='gen_') as tmp:
                image_utils.fetch(ctx, service, 'img', tmp, None, None)
                sh('qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', '-t',
                   'none', '-n', tmp, g)
        results['create-from-image'][1].append(timed(generic_image))
        sh('cmp', g, raw_img)
        # the data path alone, from the already fetched image
        meta = service.show(ctx, 'img')
        results['image-write'][0].append(timed(
            lambda: drv._download(qcow, v._ovo, meta, 'img')))
        sh('cmp', vol_file(v), raw_img)
        results['image-write'][1].append(timed(lambda: sh(
            'qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', '-t', 'none',
            '-n', qcow, g)))
        sh('cmp', g, raw_img)
        os.unlink(g)
        v.delete()
        # clone of a 4 GiB volume with 10% data
        src = be.create_volume(4)
        scatter(vol_file(src), 4 * GIB, 0.10, 2)
        holder = {}
        results['clone'][0].append(timed(
            lambda: holder.setdefault('c', src.clone())))
        sh('cmp', vol_file(holder['c']), vol_file(src))
        g = os.path.join(WORK, 'generic-clone.raw')
        open(g, 'wb').truncate(4 * GIB)
        results['clone'][1].append(timed(lambda: sh(
            'dd', 'if=' + vol_file(src), 'of=' + g, 'count=%d' % (4 * GIB),
            'bs=1M', 'iflag=count_bytes,direct', 'oflag=direct',
            'conv=sparse')))
        sh('cmp', g, vol_file(src))
        os.unlink(g)
        holder['c'].delete()
        # delete with volume_clear = zero (the clone source holds 410 MiB)
        g = os.path.join(WORK, 'generic-delete.raw')
        shutil.copyfile(vol_file(src), g)
        results['delete'][0].append(timed(src.delete))
        assert not os.path.exists(vol_file(src))

        def generic_delete():
            sh('dd', 'if=/dev/zero', 'of=' + g, 'count=%d' % (4 * GIB),
               'bs=1M', 'iflag=count_bytes', 'oflag=direct', 'conv=notrunc')
            os.unlink(g)
        results['delete'][1].append(timed(generic_delete))
    print('case               ember (median s)  generic (median s)  ratio  '
          '[runs: ember | generic]')
    for case, (e, g) in results.items():
        me, mg = statistics.median(e), statistics.median(g)
        print('%-18s %16.3f %19.3f %6.2f  [%s | %s]' % (
            case, me, mg, me / mg, ' '.join('%.3f' % x for x in e),
            ' '.join('%.3f' % x for x in g)))
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
