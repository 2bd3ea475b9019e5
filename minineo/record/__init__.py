"""The record: the site table (name -> shape), the Recorder every site passes through, the Cache, lazily computed sites."""
