"""Seeing the platform: the coordinator's web dashboard and its Prometheus metrics.

``logins`` (one-time codes and sessions), ``observer`` (what the workers' signals tell, seen
at the API), ``traffic`` (bytes per site link over the last minutes), ``metrics`` (the
Prometheus registry), ``views`` (what each page shows, read through the API's handlers),
``pages``, ``dag_drawing`` and ``network_plot`` (HTML and SVG, every value escaped), ``live``
(the event stream that tells open pages to refresh) and ``resources`` (the ``twisted.web``
resources under ``/dashboard`` and ``/metrics``). ``assembly`` joins them to a coordinator.
"""
