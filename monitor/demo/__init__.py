"""``csp-monitor demo``: the daemon and its console against a small simulated tenant world.

``world.py`` serves three customers' Exchange, SharePoint, sign-in and web app
endpoints on 127.0.0.1 and lets a script change how each answers; ``script.py``
is that script (one customer's web app fails, another's SharePoint slows, then
Exchange fails for all three, then everything recovers); ``setup.py`` writes the
daemon's config for that world into a temporary folder (its store, its file
outbox); ``run.py`` starts it all and stops it cleanly on Ctrl-C or SIGTERM.
"""
