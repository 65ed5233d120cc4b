//! ember-target: iSCSI target management (tgt first, LIO second) for Ember volumes.
