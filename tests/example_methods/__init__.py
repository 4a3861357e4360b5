"""Example methods of three families, each one file that registers itself (issue 16's "done when"):
importing a module adds its method to ``gendm.core.methods.METHODS``; nothing else is edited."""
