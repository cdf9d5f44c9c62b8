"""Panel view classes behind the dashboards in ``apps/``.

Every dashboard's state and plots live here, so a notebook can show exactly the view a served app
shows. The scripts in ``apps/`` only construct a view and mark it servable. Importing this package
needs the ``apps`` extra (panel, holoviews, hvplot).
"""
