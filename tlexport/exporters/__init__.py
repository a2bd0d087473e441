"""Export: the orchestration (`pipeline`: stage -> build -> describe -> check -> verify -> time ->
publish, iterating the format registry), its verification book-keeping (`verification`),
describing and publishing (`publish`), the `Job` handed to each format's builder, the typed
options (`options`), the formats' own steps (`hooks`), and the int8 machinery every quantizing
format shares. Each format's own builder, options and hooks live in its package
(`tlexport.formats`)."""
