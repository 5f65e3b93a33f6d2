"""The `billing` command line: click only, one module per command group, one error wrapper
(`errors`) that turns every failure into one line and an exit code.
"""
