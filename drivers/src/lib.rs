//! ember-drivers: Cinder-shaped volume drivers (file backend, LVM backend) on the Ember engine.
