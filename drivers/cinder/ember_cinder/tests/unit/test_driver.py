# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.
"""Unit tests of the Ember driver: options, argument vectors, the JSON
contract and error mapping (only the command transport is replaced), plus one
test against the real ``ember`` binary: a hostile image is refused with
ImageUnacceptable and nothing is written.

Run: ``python -m unittest ember_cinder.tests.unit.test_driver``.
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest
from unittest import mock
import uuid

from oslo_concurrency import processutils
from oslo_config import cfg

from cinder import exception
from cinder.volume import configuration

from ember_cinder import driver as ember

CONF = cfg.CONF
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__),
                                    *(['..'] * 5)))


class FakeVolume(object):
    def __init__(self, size=1, vid=None, name_id=None):
        self.id = vid or str(uuid.uuid4())
        self._name_id = name_id
        self.size = size
        self.user_id = 'u'
        self.project_id = 'p'
        self.provider_location = None

    @property
    def name_id(self):
        return self._name_id or self.id

    @property
    def name(self):
        return 'volume-%s' % self.name_id


class FakeSnapshot(object):
    def __init__(self, volume):
        self.id = str(uuid.uuid4())
        self.volume = volume
        self.name = 'snapshot-%s' % self.id


def doc(**kw):
    kw['schema'] = ember.SCHEMA
    return json.dumps(kw)


def failure(category, message):
    out = json.dumps({'schema': ember.SCHEMA,
                      'error': {'category': category,
                                'cinder_exception': category,
                                'message': message}})
    return processutils.ProcessExecutionError(
        stdout=out, stderr='ember: ' + message, exit_code=1)


class DriverTestCase(unittest.TestCase):
    group = 'ember-unit'

    def setUp(self):
        super().setUp()
        self.state = tempfile.mkdtemp(prefix='ember-cinder-unit-')
        self.addCleanup(shutil.rmtree, self.state, ignore_errors=True)
        CONF.set_override('state_path', self.state)
        self.addCleanup(CONF.clear_override, 'state_path')
        self.overrides = []
        self.execute = mock.Mock(return_value=(doc(), ''))

    def tearDown(self):
        for name in self.overrides:
            CONF.clear_override(name, group=self.group)
        super().tearDown()

    def make(self, **opts):
        for k, v in opts.items():
            CONF.set_override(k, v, group=self.group)
            self.overrides.append(k)
        conf = configuration.Configuration(ember.ember_opts,
                                           config_group=self.group)
        d = ember.EmberVolumeDriver(configuration=conf, execute=self.execute,
                                    host='h@' + self.group)
        return d

    def setup(self, **opts):
        d = self.make(**opts)
        d.do_setup(None)
        self.execute.reset_mock()
        return d

    def argv(self, call=-1):
        args, kwargs = self.execute.call_args_list[call]
        self.assertTrue(kwargs.get('run_as_root'))
        return list(args)

    def prefix(self, d):
        return ['ember', 'volume', '--config', d._config_path,
                '--backend', 'ember-unit']


class OptionTests(DriverTestCase):

    def test_driver_options(self):
        names = {o.name for o in ember.EmberVolumeDriver.get_driver_options()}
        self.assertEqual({'ember_backend', 'ember_data_dir',
                          'ember_volume_group', 'ember_binary',
                          'ember_config', 'ember_connection'}, names)

    def test_bad_values_fail_at_setup(self):
        for opt, value in (('ember_backend', 'ceph'),
                           ('ember_connection', 'nvme'),
                           ('ember_data_dir', 'relative/dir')):
            with self.subTest(opt=opt):
                d = self.make(**{opt: value})
                self.assertRaises(exception.InvalidConfigurationValue,
                                  d.do_setup, None)
                CONF.clear_override(opt, group=self.group)
        self.execute.assert_not_called()

    def test_lio_refused_for_iscsi(self):
        d = self.make(target_helper='lioadm')
        self.assertRaises(exception.InvalidConfigurationValue,
                          d.do_setup, None)

    def test_config_file_from_cinder_options(self):
        extra = os.path.join(self.state, 'extra.toml')
        with open(extra, 'w') as f:
            f.write('lvm_conf_file = "/x/lvm.conf"\n[target]\n'
                    'control_port = 7\n')
        d = self.setup(ember_backend='lvm', ember_volume_group='vg1',
                       volume_clear='none', volume_clear_size=5,
                       volume_copy_bps_limit=1000, use_chap_auth=True,
                       target_ip_address='127.0.0.1', target_port=3299,
                       reserved_percentage=7, ember_config=extra)
        self.assertEqual(0o600, os.stat(d._config_path).st_mode & 0o777)
        import tomllib
        with open(d._config_path, 'rb') as f:
            b = tomllib.load(f)['backend'][0]
        self.assertEqual('lvm', b['driver'])
        self.assertEqual('vg1', b['volume_group'])
        self.assertEqual('none', b['volume_clear'])
        self.assertEqual(5, b['volume_clear_size'])
        self.assertEqual(1000, b['volume_copy_bps_limit'])
        self.assertEqual(7, b['reserved_percentage'])
        self.assertEqual('/x/lvm.conf', b['lvm_conf_file'])
        self.assertEqual({'target_prefix': 'iqn.2010-10.org.openstack:',
                          'target_ip_address': '127.0.0.1',
                          'target_port': 3299, 'use_chap': True,
                          'control_port': 7,
                          'volumes_dir': os.path.join(
                              self.state, 'ember', 'ember-unit', 'targets')},
                         b['target'])

    def test_local_connection_has_no_target(self):
        d = self.setup(ember_connection='local')
        import tomllib
        with open(d._config_path, 'rb') as f:
            self.assertNotIn('target', tomllib.load(f)['backend'][0])


class ContractTests(DriverTestCase):

    def test_argument_vectors(self):
        d = self.setup()
        v = FakeVolume(size=3)
        src = FakeVolume(size=2, name_id=str(uuid.uuid4()))
        s = FakeSnapshot(src)
        p = self.prefix(d)
        cases = [
            (lambda: d.create_volume(v),
             ['create', '--id', v.id, '--size', '3']),
            (lambda: d.delete_volume(src), ['delete', src.name]),
            (lambda: d.create_snapshot(s),
             ['snapshot', src.name, '--id', s.id]),
            (lambda: d.delete_snapshot(s), ['snapshot-delete', s.name]),
            (lambda: d.create_cloned_volume(v, src),
             ['clone', src.name, '--id', v.id, '--size', '3']),
            (lambda: d.create_volume_from_snapshot(v, s),
             ['from-snapshot', s.name, '--id', v.id, '--size', '3']),
            (lambda: d.extend_volume(v, 5),
             ['extend', v.name, '--size', '5']),
            (lambda: d.revert_to_snapshot(None, src, s),
             ['revert', src.name, s.name]),
            (lambda: d.unmanage(v), ['unmanage', v.name]),
            (lambda: d.manage_existing(v, {'source-name': 'lv1'}),
             ['manage', 'lv1', '--id', v.id]),
            (lambda: d.remove_export(None, v), ['unexport', v.name]),
        ]
        for call, want in cases:
            with self.subTest(want=want[0]):
                self.execute.return_value = (doc(), '')
                call()
                self.assertEqual(p + want + ['--json'], self.argv())

    def test_connection_info_is_embers(self):
        d = self.setup()
        v = FakeVolume()
        info = {'driver_volume_type': 'iscsi',
                'data': {'target_iqn': 'iqn.x:' + v.name, 'target_lun': 1,
                         'auth_password': 'secret'}}
        self.execute.return_value = (doc(**info), '')
        got = d.initialize_connection(
            v, {'initiator': 'iqn.1994-05.com.redhat:h1', 'ip': '10.0.0.1',
                'host': 'h1', 'multipath': False})
        self.assertEqual(info, got)
        argv = self.argv()
        self.assertEqual(
            self.prefix(d) + ['connect', v.name, '--initiator',
                              'iqn.1994-05.com.redhat:h1', '--ip', '10.0.0.1',
                              '--host', 'h1', '--json'], argv)
        self.assertNotIn('secret', ' '.join(argv))
        self.assertRaises(exception.InvalidConnectorException,
                          d.initialize_connection, v, {'host': 'h1'})

    def test_local_connection(self):
        d = self.setup(ember_connection='local')
        v = FakeVolume()
        info = {'driver_volume_type': 'local',
                'data': {'device_path': '/dev/loop9', 'volume_id': v.id}}
        self.execute.return_value = (doc(**info), '')
        self.assertEqual(info, d.initialize_connection(v, {'host': 'h'}))
        self.assertEqual(self.prefix(d) + ['connect', v.name, '--local',
                                           '--host', 'h', '--json'],
                         self.argv())
        self.assertIsNone(d.create_export(None, v, {}))
        d.terminate_connection(v, {'host': 'h'})
        self.assertEqual(self.prefix(d) + ['disconnect', v.name, '--local',
                                           '--json'], self.argv())

    def test_export_model_update(self):
        d = self.setup()
        v = FakeVolume()
        self.execute.return_value = (doc(
            provider_location='127.0.0.1:3260,1 iqn.x:%s 1' % v.name,
            provider_auth='CHAP u p'), '')
        self.assertEqual(
            {'provider_location': '127.0.0.1:3260,1 iqn.x:%s 1' % v.name,
             'provider_auth': 'CHAP u p'},
            d.create_export(None, v, {}))

    def test_stats(self):
        d = self.setup(volume_backend_name='fast')
        self.execute.return_value = (doc(
            total_capacity_gb=10, free_capacity_gb=5,
            location_info='FileDriver:h:/x',
            pools=[{'pool_name': 'p', 'total_capacity_gb': 10,
                    'free_capacity_gb': 5}]), '')
        s = d.get_volume_stats(refresh=True)
        self.assertEqual('fast', s['volume_backend_name'])
        self.assertNotIn('schema', s)
        want = 'EmberVolumeDriver:%s:%s:ember-unit' % (d.hostname,
                                                      d._config_path)
        self.assertEqual(want, s['location_info'])
        self.assertEqual(want, s['pools'][0]['location_info'])

    def test_schema_mismatch_is_refused(self):
        d = self.setup()
        self.execute.return_value = (json.dumps({'schema': 2}), '')
        self.assertRaises(exception.VolumeBackendAPIException,
                          d.create_volume, FakeVolume())
        self.execute.return_value = ('not json', '')
        self.assertRaises(exception.VolumeBackendAPIException,
                          d.create_volume, FakeVolume())

    def test_migrate(self):
        d = self.setup()
        v = FakeVolume()
        host = {'capabilities': {'location_info':
                'EmberVolumeDriver:%s:/s/ember/lvm.toml:lvm' % d.hostname}}
        self.assertEqual((True, None), d.migrate_volume(None, v, host))
        self.assertEqual(self.prefix(d) + [
            'migrate', v.name, '--to-backend', 'lvm', '--to-config',
            '/s/ember/lvm.toml', '--json'], self.argv())
        self.execute.reset_mock()
        for other in ('LVMVolumeDriver:%s:vg:default:0' % d.hostname,
                      'EmberVolumeDriver:otherhost:/s/x.toml:lvm', ''):
            self.assertEqual((False, None), d.migrate_volume(
                None, v, {'capabilities': {'location_info': other}}))
        self.execute.assert_not_called()
        self.execute.side_effect = failure('VolumeIsBusy', 'has snapshots')
        self.assertEqual((False, None), d.migrate_volume(None, v, host))

    def test_manageable(self):
        d = self.setup()
        m = [{'reference': {'source-name': 'a'}, 'size': 2,
              'safe_to_manage': True, 'reason_not_safe': None,
              'cinder_id': None, 'extra_info': None},
             {'reference': {'source-name': 'b'}, 'size': 1,
              'safe_to_manage': False, 'reason_not_safe': 'in use',
              'cinder_id': None, 'extra_info': None}]
        self.execute.return_value = (doc(manageable=m), '')
        self.assertEqual(2, d.manage_existing_get_size(
            FakeVolume(), {'source-name': 'a'}))
        self.assertRaises(exception.ManageExistingInvalidReference,
                          d.manage_existing_get_size, FakeVolume(),
                          {'source-name': 'b'})
        self.assertRaises(exception.ManageExistingInvalidReference,
                          d.manage_existing_get_size, FakeVolume(),
                          {'source-name': 'zz'})
        got = d.get_manageable_volumes([], None, 10, 0, ['size'], ['asc'])
        self.assertEqual(['b', 'a'],
                         [e['reference']['source-name'] for e in got])


class ErrorMappingTests(DriverTestCase):

    def test_categories(self):
        d = self.setup()
        v = FakeVolume()
        cases = [
            ('VolumeIsBusy', 'volume x is busy: it has snapshots',
             exception.VolumeIsBusy),
            ('SnapshotIsBusy', 'snapshot s is busy', exception.SnapshotIsBusy),
            ('InvalidInput', 'invalid input: size', exception.InvalidInput),
            ('ImageUnacceptable', 'image /i is unacceptable: backing file',
             exception.ImageUnacceptable),
            ('ManageExistingInvalidReference', 'bad ref',
             exception.ManageExistingInvalidReference),
            ('ManageExistingAlreadyManaged', 'lv is already managed',
             exception.ManageExistingAlreadyManaged),
            ('NotSupported', 'export is not supported',
             exception.NotSupportedOperation),
            ('AlreadyExists', 'volume v already exists', exception.Duplicate),
            ('NoSpace', 'no space', exception.VolumeBackendAPIException),
            ('BackendApi', 'lvcreate failed',
             exception.VolumeBackendAPIException),
            ('NotFound', 'volume volume-1 not found', exception.VolumeNotFound),
            ('NotFound', 'snapshot snapshot-1 not found',
             exception.SnapshotNotFound),
            ('NotFound', 'volume group vg9 not found',
             exception.VolumeGroupNotFound),
        ]
        for category, message, cls in cases:
            with self.subTest(category=category, message=message):
                self.execute.side_effect = failure(category, message)
                with self.assertRaises(cls) as ctx:
                    d.extend_volume(v, 2)
                self.assertIn(message, str(ctx.exception))

    def test_no_json_on_failure(self):
        d = self.setup()
        self.execute.side_effect = processutils.ProcessExecutionError(
            stdout='', stderr='ember: unexpected argument', exit_code=2)
        with self.assertRaises(exception.VolumeBackendAPIException) as ctx:
            d.extend_volume(FakeVolume(), 2)
        self.assertIn('unexpected argument', str(ctx.exception))

    def test_deletes_are_idempotent(self):
        d = self.setup()
        self.execute.side_effect = failure('NotFound', 'volume v not found')
        d.delete_volume(FakeVolume())
        self.execute.side_effect = failure('NotFound', 'snapshot s not found')
        d.delete_snapshot(FakeSnapshot(FakeVolume()))


def ember_binary():
    built = os.path.join(REPO, 'build', 'release', 'ember')
    if os.path.exists(built):
        return built
    return shutil.which('ember')


class FakeImageService(object):
    def __init__(self, path, meta):
        self.path, self.meta = path, meta

    def show(self, context, image_id):
        return dict(self.meta, id=image_id)

    def download(self, context, image_id, data):
        with open(self.path, 'rb') as f:
            shutil.copyfileobj(f, data)


class RealBinaryTests(DriverTestCase):
    """Against the real ember binary and a real file backend."""

    def setUp(self):
        super().setUp()
        self.binary = ember_binary()
        if not self.binary or not shutil.which('qemu-img'):
            if os.environ.get('EMBER_REQUIRE_SYSTEM_TESTS') == '1':
                self.fail('ember binary (cargo build --release) or qemu-img '
                          'missing')
            self.skipTest('needs build/release/ember and qemu-img')
        self.execute = mock.Mock(side_effect=lambda *a, **k:
                                 processutils.execute(*a, root_helper='env',
                                                      **k))
        CONF.set_override('image_conversion_dir',
                          os.path.join(self.state, 'conversion'))
        self.addCleanup(CONF.clear_override, 'image_conversion_dir')

    def test_hostile_image_is_refused_and_nothing_written(self):
        d = self.setup(ember_binary=self.binary, ember_connection='local')
        v = FakeVolume(size=1)
        d.create_volume(v)
        data = os.path.join(self.state, 'ember', 'ember-unit', 'data',
                            v.name + '.raw')
        with open(data, 'r+b') as f:
            f.write(b'tenant data')
        before = open(data, 'rb').read(1 << 20)
        secret = os.path.join(self.state, 'host-secret')
        with open(secret, 'wb') as f:
            f.write(b'host secret\n' * 100)
        image = os.path.join(self.state, 'hostile.qcow2')
        subprocess.run(['qemu-img', 'create', '-f', 'qcow2', '-F', 'raw',
                        '-b', secret, image, '1M'], check=True,
                       capture_output=True)
        service = FakeImageService(image, {'disk_format': 'qcow2',
                                           'container_format': 'bare'})
        with self.assertRaises(exception.ImageUnacceptable) as ctx:
            d.copy_image_to_volume(None, v, service, 'img-1')
        self.assertIn('backing', str(ctx.exception))
        self.assertEqual(before, open(data, 'rb').read(1 << 20))
        # Declared raw, but it is a qcow2: refused too.
        service.meta['disk_format'] = 'raw'
        self.assertRaises(exception.ImageUnacceptable,
                          d.copy_image_to_volume, None, v, service, 'img-1')
        self.assertEqual(before, open(data, 'rb').read(1 << 20))
        self.assertEqual([], os.listdir(CONF.image_conversion_dir))
        d.delete_volume(v)
        self.assertFalse(os.path.exists(data))

    def test_image_fetched_by_the_create_flow_is_not_downloaded_again(self):
        d = self.setup(ember_binary=self.binary, ember_connection='local')
        v = FakeVolume(size=1)
        d.create_volume(v)
        image = os.path.join(self.state, 'fetched.raw')
        with open(image, 'wb') as f:
            f.truncate(4 << 20)
            f.seek(1 << 20)
            f.write(b'fetched once' * 1000)

        class NoDownload(FakeImageService):
            def download(self, context, image_id, data):
                raise AssertionError('the image was downloaded again')

        class Fetched(object):
            def get(self, context, image_id):
                return image if image_id == 'img-1' else None

        service = NoDownload(image, {'disk_format': 'raw',
                                     'container_format': 'bare'})
        service.temp_images = Fetched()
        d.copy_image_to_volume(None, v, service, 'img-1')
        data = os.path.join(self.state, 'ember', 'ember-unit', 'data',
                            v.name + '.raw')
        with open(data, 'rb') as f, open(image, 'rb') as want:
            self.assertEqual(want.read(), f.read(4 << 20))
        self.assertTrue(os.path.exists(image), 'the fetched file is Cinder\'s')
        d.delete_volume(v)


if __name__ == '__main__':
    unittest.main()
