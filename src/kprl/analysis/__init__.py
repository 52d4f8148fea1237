"""Many runs at once: statistics over seeds, the landmark regression, ``kprl report`` and ``kprl sweep`` / ``tune``."""
