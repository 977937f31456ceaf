"""The ``bex`` command: parse, call, print (``bex.cli.main:main`` is the console script).

One module per command group - :mod:`.data` (collect, relabel, info, import, export), :mod:`.train` (train,
sweep, results, distill), :mod:`.analysis` (coverage, report), :mod:`.pipelines` (replicate, demo),
:mod:`.cluster` (status) - on the shared parts of :mod:`.app` (options, one-line errors, output) and the progress
printer of :mod:`.progress`.  The commands pass work on to the packages below; defaults live in the configs.
"""
