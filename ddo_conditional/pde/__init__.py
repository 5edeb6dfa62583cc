"""PDE field-pair tasks (forward, inverse, joint): routes, inversion, posterior, task evaluation, report, command."""
