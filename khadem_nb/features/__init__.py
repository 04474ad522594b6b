"""Options that cut across every driver, one module each: their checks and their pure rules.

``flow`` (concurrency and rate lanes), ``resources`` (units workers offer), ``unique`` (unique
locks), ``schedules`` (cron and intervals), ``dependencies`` (jobs that wait for others) and
``why_waiting`` (why a queued job has not started). They sit above the model and below the
drivers: a driver implements what a feature's rule says, a feature never imports a driver.
"""
