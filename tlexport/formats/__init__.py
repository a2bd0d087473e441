"""Export formats: one package per format, and the registry that lists them (`registry.PACKAGES`,
`registry.FORMATS`; docs/formats.md is the generated table of all of them).

A format's package holds everything about it:

    __init__.py   SPEC: its FormatSpec (suffix, file or folder, fixed file names and companions,
                  precisions, runtimes, runs-code, optional packages and their extra, int8 support)
    metadata.py   read(path) -> dict: the embedded metadata, without running the artifact
                  (a `spec.MetadataReader`)
    build.py      build(job, say) -> [Artifact]: makes the one precision it is handed
                  (an `exporters.job.Builder`)
    runtime.py    RUNTIMES: the runtimes it provides (only when `SPEC.provides` names some),
                  each a `runtimes.base.RuntimeFactory`
    options.py    its options class (only when `SPEC.options` names one): fields declared with
                  `formats.options.option`, from which its export flags and keywords derive
    hooks.py      its own steps in the export (optional: `exporters.hooks.FormatHooks`)

Beside the packages: spec.py (FormatSpec), registry.py (the one list), files.py (what a file in
an export folder is), options.py (what a format option is), metadata.py (read_metadata).

The submodules sit on different floors (tests/test_layers.py): the spec and reader are as low as
the tables, the runtime on the runtimes floor, the builder, options, hooks (and helpers) on the
exporters floor. docs/adding-a-format.md walks through adding one; docs/formats.md is generated from the
registry (`python -m tlexport.formats.doc > docs/formats.md`).
"""
