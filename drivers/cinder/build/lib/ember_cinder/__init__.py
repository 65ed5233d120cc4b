"""ember-cinder: a Cinder volume driver delegating to the ``ember`` binary."""
