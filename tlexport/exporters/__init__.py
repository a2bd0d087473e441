"""Export: the pipeline (stage -> build -> verify -> publish, iterating the format registry), the
`Job` handed to each format's builder, the typed options, and the int8 machinery every
quantizing format shares. Each format's own builder lives in its package (`tlexport.formats`)."""
