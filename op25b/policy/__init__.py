"""The policy layer: what a policy is and what it decides, with no I/O beyond reading it.

``model`` (typed, frozen), ``addr`` (address text), ``loader`` + ``yamlnodes`` +
``pools`` + ``overlap`` (YAML and pool files in, validated ``Policy`` out), ``summary``
(``op25b check``'s text), ``lpm`` + ``compiled`` (longest-prefix tables), and
``decide`` (the pure verdict core). Imports nothing from the rest of op25b but
``op25b.util`` and ``op25b.errors``; importable with only PyYAML installed.
"""
