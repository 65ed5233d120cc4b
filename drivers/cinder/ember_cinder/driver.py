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
"""Cinder volume driver whose data path is the ``ember`` binary.

Every operation is one ``ember volume ... --json`` call through
:meth:`EmberVolumeDriver._ember`, run with Cinder's root helper; the reply is
a versioned JSON document (``docs/json-contract.md``) and Ember's error
categories become Cinder exceptions in one place (:func:`_raise`).
"""

import json
import os
import socket

from oslo_concurrency import processutils
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import excutils
from oslo_utils import strutils

from cinder import exception
from cinder.image import image_utils
from cinder import interface
from cinder.volume import configuration
from cinder.volume import driver
from cinder.volume import volume_utils

LOG = logging.getLogger(__name__)

#: The ``--json`` schema this driver speaks.
SCHEMA = 1

BACKENDS = ('file', 'lvm')
CONNECTIONS = ('iscsi', 'local')
# Image formats Ember writes itself; others are written raw by Ember and
# converted by Cinder's image_utils on upload.
EMBER_IMAGE_FORMATS = ('raw', 'qcow2')

ember_opts = [
    cfg.StrOpt('ember_backend', default='file',
               help='Ember backend kind: "file" (sparse files in '
                    'ember_data_dir) or "lvm" (LVs in ember_volume_group).'),
    cfg.StrOpt('ember_data_dir',
               help='File backend: the folder holding volumes (LVM backend: '
                    'its state folder). Default: $state_path/ember/<backend>.'),
    cfg.StrOpt('ember_volume_group', default='cinder-volumes',
               help='LVM backend: the volume group holding volumes.'),
    cfg.StrOpt('ember_binary', default='ember',
               help='The ember binary (a name on PATH or an absolute path).'),
    cfg.StrOpt('ember_config',
               help='Optional TOML file with more keys for this backend\'s '
                    'Ember section (e.g. lvm_conf_file, lvm_type, and a '
                    '[target] table such as control_port).'),
    cfg.StrOpt('ember_connection', default='iscsi',
               help='How hosts reach volumes: "iscsi" (tgt exports with '
                    'CHAP and per-initiator ACLs) or "local" (a loop device '
                    'on this host, driver_volume_type "local").'),
]

CONF = cfg.CONF
CONF.register_opts(ember_opts, group=configuration.SHARED_CONF_GROUP)

# Ember's error categories (docs/json-contract.md) -> Cinder exceptions.
_EXCEPTIONS = {
    'VolumeIsBusy': exception.VolumeIsBusy,
    'SnapshotIsBusy': exception.SnapshotIsBusy,
    'InvalidInput': exception.InvalidInput,
    'InvalidConfiguration': exception.InvalidConfigurationValue,
    'AlreadyExists': exception.Duplicate,
    'ManageExistingInvalidReference':
        exception.ManageExistingInvalidReference,
    'ManageExistingAlreadyManaged': exception.ManageExistingAlreadyManaged,
    'ImageUnacceptable': exception.ImageUnacceptable,
    'NotSupported': exception.NotSupportedOperation,
}
_NOT_FOUND = (
    ('snapshot ', exception.SnapshotNotFound, 'snapshot_id'),
    ('volume group ', exception.VolumeGroupNotFound, 'vg_name'),
    ('volume ', exception.VolumeNotFound, 'volume_id'),
)


def _raise(category, message):
    """Raises the Cinder exception for an Ember error category."""
    if category == 'NotFound':
        for prefix, cls, key in _NOT_FOUND:
            if message.startswith(prefix):
                name = message[len(prefix):].split(' ', 1)[0]
                raise cls(message=message, **{key: name})
        raise exception.NotFound(message=message)
    cls = _EXCEPTIONS.get(category)
    if cls is not None:
        raise cls(message=message)
    raise exception.VolumeBackendAPIException(data=message)


def _toml_value(v):
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return '[%s]' % ', '.join(_toml_value(x) for x in v)
    # A JSON string is a valid TOML basic string.
    return json.dumps(str(v))


@interface.volumedriver
class EmberVolumeDriver(driver.VolumeDriver):
    """Volumes on Ember's file or LVM backend, moved by Ember's engine.

    Version history:
        1.0.0 - first version: JSON schema 1
    """

    VERSION = '1.0.0'
    CI_WIKI_NAME = 'Ember_CI'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(ember_opts)
        self.backend_name = (
            self.configuration.safe_get('volume_backend_name') or 'Ember')
        section = getattr(self.configuration, 'config_group', None)
        self._section = self._ember_name(section or self.backend_name)
        self._config_path = None
        self.hostname = socket.gethostname()

    @staticmethod
    def get_driver_options():
        return ember_opts

    # ---- configuration ----

    @staticmethod
    def _ember_name(name):
        """A backend name Ember accepts (letters, digits, _ . + -)."""
        safe = ''.join(c if c.isalnum() or c in '_.+-' else '-'
                       for c in str(name))
        return safe.lstrip('-') or 'ember'

    def _get(self, name, default=None):
        value = self.configuration.safe_get(name)
        return default if value is None else value

    def _state_dir(self):
        return os.path.join(CONF.state_path, 'ember')

    def _backend_section(self):
        """This backend's Ember config section, from Cinder's options."""
        c = self.configuration
        kind = self._get('ember_backend', 'file')
        if kind not in BACKENDS:
            raise exception.InvalidConfigurationValue(
                option='ember_backend', value=kind)
        conn = self._get('ember_connection', 'iscsi')
        if conn not in CONNECTIONS:
            raise exception.InvalidConfigurationValue(
                option='ember_connection', value=conn)
        helper = self._get('target_helper', 'tgtadm')
        if conn == 'iscsi' and helper != 'tgtadm':
            raise exception.InvalidConfigurationValue(
                option='target_helper', value=helper)
        clear = self._get('volume_clear', 'zero')
        if clear not in ('zero', 'none'):
            raise exception.InvalidConfigurationValue(
                option='volume_clear', value=clear)
        data_dir = self._get('ember_data_dir') or os.path.join(
            self._state_dir(), self._section)
        if not os.path.isabs(data_dir):
            raise exception.InvalidConfigurationValue(
                option='ember_data_dir', value=data_dir)
        section = {
            'name': self._section,
            'driver': kind,
            'path': data_dir,
            'volume_clear': clear,
            'volume_clear_size': int(self._get('volume_clear_size', 0)),
            'volume_copy_bps_limit': int(
                self._get('volume_copy_bps_limit', 0)),
            'reserved_percentage': int(self._get('reserved_percentage', 0)),
            'max_over_subscription_ratio': str(
                self._get('max_over_subscription_ratio', '20.0')),
        }
        if kind == 'lvm':
            section['volume_group'] = self._get(
                'ember_volume_group', 'cinder-volumes')
        target = {}
        if conn == 'iscsi':
            target = {
                'target_prefix': self._get(
                    'target_prefix', 'iqn.2010-10.org.openstack:'),
                'target_ip_address': self._get(
                    'target_ip_address', '$my_ip'),
                'target_port': int(self._get('target_port', 3260)),
                'use_chap': bool(self._get('use_chap_auth', False)),
                'volumes_dir': os.path.join(data_dir, 'targets'),
            }
            if target['target_ip_address'] == '$my_ip':
                target['target_ip_address'] = CONF.my_ip
            flags = self._get('iscsi_target_flags', '')
            if flags:
                target['iscsi_target_flags'] = flags
            if c.safe_get('chap_username') or c.safe_get('chap_password'):
                LOG.warning('chap_username/chap_password are not used: '
                            'every export gets its own generated CHAP '
                            'credentials, as with Cinder\'s tgt target.')
        extra_path = self._get('ember_config')
        if extra_path:
            try:
                import tomllib
                with open(extra_path, 'rb') as f:
                    extra = tomllib.load(f)
            except (OSError, ValueError) as e:
                raise exception.InvalidConfigurationValue(
                    message='ember_config %s: %s' % (extra_path, e))
            target.update(extra.pop('target', {}) or {})
            section.update(extra)
        if target:
            section['target'] = target
        return section

    def _write_config(self, section):
        """Writes this backend's Ember config file (0600: it is ours)."""
        lines = ['[[backend]]']
        target = section.pop('target', None)
        lines += ['%s = %s' % (k, _toml_value(v))
                  for k, v in sorted(section.items())]
        if target:
            lines.append('[backend.target]')
            lines += ['%s = %s' % (k, _toml_value(v))
                      for k, v in sorted(target.items())]
        os.makedirs(self._state_dir(), mode=0o700, exist_ok=True)
        path = os.path.join(self._state_dir(), '%s.toml' % self._section)
        tmp = path + '.tmp'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        os.replace(tmp, path)
        return path

    # ---- the one transport ----

    def _ember(self, *args, **kwargs):
        """Runs ``ember volume ARGS --json`` and returns its JSON document.

        A failure raises the Cinder exception of Ember's error category,
        with Ember's one-line message. Output is never logged: documents can
        carry CHAP secrets.
        """
        config = kwargs.pop('config', self._config_path)
        backend = kwargs.pop('backend', self._section)
        cmd = [self._get('ember_binary', 'ember'), 'volume',
               '--config', config, '--backend', backend]
        cmd += [str(a) for a in args]
        cmd.append('--json')
        try:
            out, _err = self._execute(*cmd, run_as_root=True)
        except processutils.ProcessExecutionError as e:
            doc = self._parse(e.stdout, cmd, allow_error=True)
            err = (doc or {}).get('error') or {}
            message = err.get('message') or (e.stderr or '').strip() or str(e)
            message = strutils.mask_password(message)
            LOG.error('ember %s failed: %s', args[0] if args else '', message)
            _raise(err.get('category'), message)
        return self._parse(out, cmd)

    @staticmethod
    def _parse(out, cmd, allow_error=False):
        try:
            doc = json.loads(out or '')
        except ValueError:
            if allow_error:
                return None
            raise exception.VolumeBackendAPIException(
                data='%s printed no JSON document' % cmd[0])
        schema = doc.get('schema') if isinstance(doc, dict) else None
        if schema != SCHEMA:
            raise exception.VolumeBackendAPIException(
                data='%s speaks JSON schema %s; this driver needs %s'
                     % (cmd[0], schema, SCHEMA))
        return doc

    # ---- setup and stats ----

    def do_setup(self, context):
        self._config_path = self._write_config(self._backend_section())

    def check_for_setup_error(self):
        if self._config_path is None:
            self.do_setup(None)
        # Proves the binary runs, speaks our schema and the backend works.
        self._ember('stats')

    def _location_info(self):
        return 'EmberVolumeDriver:%s:%s:%s' % (
            self.hostname, self._config_path, self._section)

    def _update_volume_stats(self):
        doc = self._ember('stats')
        doc.pop('schema', None)
        doc['volume_backend_name'] = self.backend_name
        doc['driver_version'] = self.VERSION
        doc['vendor_name'] = 'Ember'
        doc['storage_protocol'] = (
            'iSCSI' if self._get('ember_connection') == 'iscsi' else 'local')
        doc['location_info'] = self._location_info()
        for pool in doc.get('pools') or []:
            pool['location_info'] = doc['location_info']
        self._stats = doc

    # ---- volumes and snapshots ----

    def create_volume(self, volume):
        self._ember('create', '--id', volume.name_id, '--size', volume.size)

    def delete_volume(self, volume):
        try:
            self._ember('delete', volume.name)
        except exception.VolumeNotFound:
            LOG.info('Volume %s is already gone.', volume.name)

    def create_snapshot(self, snapshot):
        self._ember('snapshot', snapshot.volume.name, '--id', snapshot.id)

    def delete_snapshot(self, snapshot):
        try:
            self._ember('snapshot-delete', snapshot.name)
        except exception.SnapshotNotFound:
            LOG.info('Snapshot %s is already gone.', snapshot.name)

    def create_volume_from_snapshot(self, volume, snapshot):
        self._ember('from-snapshot', snapshot.name, '--id', volume.name_id,
                    '--size', volume.size)

    def create_cloned_volume(self, volume, src_vref):
        self._ember('clone', src_vref.name, '--id', volume.name_id,
                    '--size', volume.size)

    def extend_volume(self, volume, new_size):
        self._ember('extend', volume.name, '--size', new_size)

    def revert_to_snapshot(self, context, volume, snapshot):
        self._ember('revert', volume.name, snapshot.name)

    # ---- images ----

    def copy_image_to_volume(self, context, volume, image_service, image_id,
                             disable_sparse=False):
        """Ember inspects the fetched image and writes it into the volume.

        The destination decides sparseness (disable_sparse changes nothing:
        holes of the image are zeros on the volume either way).
        """
        meta = image_service.show(context, image_id)
        # Cinder's create flow has usually fetched the image already (its
        # TemporaryImages, to look at it before the volume is made): that
        # file is used instead of a second download, as Cinder's own
        # fetch_to_raw does.
        fetched = getattr(image_service, 'temp_images', None)
        fetched = fetched.get(context, image_id) if fetched else None
        if fetched:
            self._download(fetched, volume, meta, image_id)
            return
        with image_utils.temporary_file(prefix='ember_image_') as tmp:
            image_utils.fetch(context, image_service, image_id, tmp,
                              volume.user_id, volume.project_id)
            self._download(tmp, volume, meta, image_id)

    def _download(self, path, volume, meta, image_id):
        if meta.get('container_format', 'bare') != 'bare':
            raise exception.ImageUnacceptable(
                image_id=image_id,
                reason='container_format %s is not supported (only bare)'
                       % meta.get('container_format'))
        try:
            self._ember('download', path, volume.name,
                        '--format', meta.get('disk_format') or 'raw')
        except exception.ImageUnacceptable as e:
            raise exception.ImageUnacceptable(image_id=image_id,
                                              reason=e.msg)

    def copy_volume_to_image(self, context, volume, image_service,
                             image_meta):
        fmt = image_meta.get('disk_format') or 'raw'
        ember_fmt = fmt if fmt in EMBER_IMAGE_FORMATS else 'raw'
        with image_utils.temporary_dir() as tmp_dir:
            path = os.path.join(tmp_dir, 'volume-upload.%s' % ember_fmt)
            self._ember('upload', volume.name, path, '--format', ember_fmt)
            # Same format: image_utils uploads the file as it is; others
            # (vmdk, vhd, ...) are converted from Ember's raw output.
            volume_utils.upload_volume(context, image_service, image_meta,
                                       path, volume, volume_format=ember_fmt)

    def clone_image(self, context, volume, image_location, image_meta,
                    image_service):
        """Reads an image straight from Glance's file store when allowed.

        With ``allowed_direct_url_schemes = file`` and a Glance filesystem
        store on this host, the image file is inspected and written without
        the HTTP fetch and temporary copy; otherwise Cinder falls back to
        copy_image_to_volume.
        """
        if 'file' not in (CONF.allowed_direct_url_schemes or []):
            return None, False
        url = (image_location or (None, None))[0]
        if not url or not url.startswith('file://'):
            return None, False
        path = url[len('file://'):]
        if not os.path.isfile(path):
            return None, False
        self.create_volume(volume)
        try:
            self._download(path, volume, image_meta, image_meta.get('id'))
        except Exception:
            with excutils.save_and_reraise_exception():
                self.delete_volume(volume)
        return None, True

    # ---- manage ----

    def _manageable(self):
        return self._ember('manageable')['manageable']

    def manage_existing(self, volume, existing_ref):
        name = existing_ref.get('source-name')
        if not name:
            raise exception.ManageExistingInvalidReference(
                existing_ref=existing_ref, reason='source-name is missing')
        self._ember('manage', name, '--id', volume.name_id)

    def manage_existing_get_size(self, volume, existing_ref):
        name = existing_ref.get('source-name')
        for m in self._manageable():
            if m['reference'].get('source-name') == name:
                if not m['safe_to_manage']:
                    raise exception.ManageExistingInvalidReference(
                        existing_ref=existing_ref,
                        reason=m.get('reason_not_safe') or 'not manageable')
                return int(m['size'])
        raise exception.ManageExistingInvalidReference(
            existing_ref=existing_ref,
            reason='no manageable object named %s' % name)

    def get_manageable_volumes(self, cinder_volumes, marker, limit, offset,
                               sort_keys, sort_dirs):
        entries = []
        for m in self._manageable():
            entries.append({
                'reference': m['reference'],
                'size': int(m['size']),
                'safe_to_manage': m['safe_to_manage'],
                'reason_not_safe': m.get('reason_not_safe'),
                'cinder_id': m.get('cinder_id'),
                'extra_info': m.get('extra_info'),
            })
        return volume_utils.paginate_entries_list(
            entries, marker, limit, offset, sort_keys, sort_dirs)

    def unmanage(self, volume):
        self._ember('unmanage', volume.name)

    # ---- exports and connections ----

    def _iscsi(self):
        return self._get('ember_connection', 'iscsi') == 'iscsi'

    def create_export(self, context, volume, connector):
        if not self._iscsi():
            return None
        doc = self._ember('export', volume.name)
        return {'provider_location': doc.get('provider_location'),
                'provider_auth': doc.get('provider_auth')}

    def ensure_export(self, context, volume):
        # Exporting an exported volume re-creates a lost target from the
        # stored provider_location/provider_auth (tgtd restarted).
        if self._iscsi() and volume.provider_location:
            self._ember('export', volume.name)

    def remove_export(self, context, volume):
        if self._iscsi():
            self._ember('unexport', volume.name)

    def initialize_connection(self, volume, connector, **kwargs):
        connector = connector or {}
        if not self._iscsi():
            args = ['connect', volume.name, '--local']
            if connector.get('host'):
                args += ['--host', connector['host']]
            doc = self._ember(*args)
        else:
            initiator = connector.get('initiator')
            if not initiator:
                raise exception.InvalidConnectorException(
                    missing='initiator')
            args = ['connect', volume.name, '--initiator', initiator]
            if connector.get('ip'):
                args += ['--ip', connector['ip']]
            if connector.get('host'):
                args += ['--host', connector['host']]
            if connector.get('multipath'):
                args.append('--multipath')
            doc = self._ember(*args)
        doc.pop('schema', None)
        return doc

    def terminate_connection(self, volume, connector, **kwargs):
        if not self._iscsi():
            self._ember('disconnect', volume.name, '--local')
        elif connector and connector.get('initiator'):
            self._ember('disconnect', volume.name,
                        '--initiator', connector['initiator'])
        else:
            # A force detach has no connector: no initiator to revoke; the
            # remove_export that follows takes the whole target away.
            LOG.info('terminate_connection of %s without an initiator',
                     volume.name)

    # ---- migration ----

    def migrate_volume(self, context, volume, host):
        """Moves a volume to another Ember backend of this host."""
        info = (host.get('capabilities') or {}).get('location_info') or ''
        parts = info.split(':')
        if (len(parts) != 4 or parts[0] != 'EmberVolumeDriver'
                or parts[1] != self.hostname):
            return False, None
        _kind, _host, dest_config, dest_backend = parts
        if dest_backend == self._section:
            return False, None
        try:
            self._ember('migrate', volume.name, '--to-backend', dest_backend,
                        '--to-config', dest_config)
        except exception.VolumeIsBusy as e:
            LOG.info('Ember cannot move %s itself (%s): generic migration',
                     volume.name, e.msg)
            return False, None
        return True, None

    def update_migrated_volume(self, ctxt, volume, new_volume,
                               original_volume_status):
        # Ember keeps the migration volume's backend name: Cinder points the
        # volume at it through _name_id.
        return {'_name_id': new_volume._name_id or new_volume.id,
                'provider_location': new_volume.provider_location}

