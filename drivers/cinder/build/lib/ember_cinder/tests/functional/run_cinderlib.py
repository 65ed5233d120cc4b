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
"""Runs cinderlib's driver-agnostic functional suite on Cinder 29.

cinderlib 5.2.0 (its last release) first sets up its "memory_db" persistence,
which imports ``cinder.db.sqlalchemy`` (gone in Cinder 29), then the suite
switches to plain "memory" persistence for the tests themselves. Mapping the
first to the second is the only change: every test is cinderlib's own.

Usage: CL_FTEST_CFG=ftest.yaml CL_FTEST_ROOT_HELPER=env \\
       python -m ember_cinder.tests.functional.run_cinderlib
"""

import sys
import unittest

import cinderlib
from cinderlib import persistence

_setup = persistence.setup


def _memory_instead_of_memory_db(config):
    if isinstance(config, dict) and config.get('storage') == 'memory_db':
        config = dict(config, storage='memory')
    return _setup(config)


persistence.setup = _memory_instead_of_memory_db
cinderlib.persistence.setup = _memory_instead_of_memory_db

if __name__ == '__main__':
    unittest.main(module='cinderlib.tests.functional.test_basic',
                  argv=[sys.argv[0]] + sys.argv[1:], verbosity=2)
