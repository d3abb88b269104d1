"""Live migration: `hutch migrate ID HOST:PORT` to a `hutch receive` on another host.

Everything travels over one TCP connection (messages are length-prefixed JSON;
files travel as tar streams cut into length-prefixed frames), except memory, which
CRIU's page server receives directly:

  source (migrate)                         destination (receive)
  ---------------------------------------  ----------------------------------------
  hello: id, config.json, options     ->   checks the id is free, makes a bundle
  rootfs, pass 1 (container running)  ->   unpacks it                (unless shared)
                                      <-   page server started: its port
  freeze the container (a guard process thaws it if migrate dies from here on)
  CRIU dump, pages to the page server ->   (CRIU's page server writes them)
  rootfs, pass 2 (what changed)       ->   applies it
  the other images                    ->   restores; the container stays frozen
                                      <-   restored: pid, bytes received
  kill the source container
  commit                              ->   thaws the restored container
                                      <-   done
  clean-up at the source

A failure or a lost connection before the commit rolls everything back: the
destination removes what it made, and the source thaws its container, which never
stopped existing.  (One window cannot be closed by either side alone: if the source
dies between killing its copy and sending the commit, the destination rolls back
too.  It is two syscalls wide.)

Downtime is measured from the freeze to the destination's "restored".
"""
