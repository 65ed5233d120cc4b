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
"""Cinder's own functional suites (real API, scheduler and volume manager in
one process) with EmberVolumeDriver as the volume driver: once on the file
backend, once on the LVM backend. The driver runs the real ``ember`` binary
through cinder-rootwrap with the driver's own filters file.

The one flag changed besides the driver's: ``scheduler_driver_init_wait_time``
= 1. A driver that reports pools (this one, Cinder's LVM driver) is only
"first received" by the scheduler after its second identical report, which in
this single-process harness comes from the 60 s periodic task: the scheduler
would sit out its whole 60 s start-up wait in every test, and the volume
service would look down by then.

Run by ``scripts/cinder-driver-tests.sh``, which sets EMBER_FT_* (the
rootwrap config, a scratch folder, the LVM volume group and its lvm.conf).
"""

import os
import tempfile

from cinder.tests.functional import test_group_snapshots
from cinder.tests.functional import test_groups
from cinder.tests.functional import test_volumes
from cinder.volume import configuration

import ember_cinder.driver  # noqa: F401  (registers the ember_* options)

ENV = ('EMBER_FT_ROOTWRAP', 'EMBER_FT_DIR')


def _require_env(test):
    missing = [k for k in ENV if not os.environ.get(k)]
    if missing:
        if os.environ.get('EMBER_REQUIRE_SYSTEM_TESTS') == '1':
            test.fail('%s not set: run scripts/cinder-driver-tests.sh'
                      % ', '.join(missing))
        test.skipTest('run scripts/cinder-driver-tests.sh (sets %s)'
                      % ', '.join(missing))


class _EmberFlags(object):
    """Points the volume service at EmberVolumeDriver."""

    ember_backend = 'file'

    def setUp(self):
        _require_env(self)
        super().setUp()

    def _get_flags(self):
        f = super()._get_flags()
        if any(not os.environ.get(k) for k in ENV):
            return f
        g = configuration.SHARED_CONF_GROUP
        scratch = tempfile.mkdtemp(prefix='ft-', dir=os.environ['EMBER_FT_DIR'])
        f['volume_driver'] = {'v': 'ember_cinder.driver.EmberVolumeDriver',
                              'g': g}
        f['ember_backend'] = {'v': self.ember_backend, 'g': g}
        f['ember_data_dir'] = {'v': os.path.join(scratch, 'data'), 'g': g}
        f['ember_connection'] = {'v': 'local', 'g': g}
        f['ember_binary'] = {'v': 'ember', 'g': g}
        f['rootwrap_config'] = {'v': os.environ['EMBER_FT_ROOTWRAP']}
        f['state_path'] = {'v': scratch}
        f['scheduler_driver_init_wait_time'] = {'v': 1}
        if self.ember_backend == 'lvm':
            f['ember_volume_group'] = {'v': os.environ['EMBER_FT_VG'], 'g': g}
            extra = os.path.join(scratch, 'ember-extra.toml')
            with open(extra, 'w') as fh:
                fh.write('lvm_conf_file = "%s"\n'
                         % os.environ['EMBER_FT_LVM_CONF'])
            f['ember_config'] = {'v': extra, 'g': g}
        return f


class _Lvm(_EmberFlags):
    ember_backend = 'lvm'

    def setUp(self):
        if not os.environ.get('EMBER_FT_VG'):
            _require_env(self)
            if os.environ.get('EMBER_REQUIRE_SYSTEM_TESTS') == '1':
                self.fail('EMBER_FT_VG not set')
            self.skipTest('no LVM volume group (EMBER_FT_VG)')
        super().setUp()


class EmberFileVolumesTest(_EmberFlags, test_volumes.VolumesTest):
    pass


class EmberLvmVolumesTest(_Lvm, test_volumes.VolumesTest):
    pass


class EmberFileGroupsTest(_EmberFlags, test_groups.GroupsTest):
    pass


class EmberLvmGroupsTest(_Lvm, test_groups.GroupsTest):
    pass


class EmberFileGroupSnapshotsTest(_EmberFlags,
                                  test_group_snapshots.GroupSnapshotsTest):
    pass


class EmberLvmGroupSnapshotsTest(_Lvm,
                                 test_group_snapshots.GroupSnapshotsTest):
    pass
