"""The commands: flags parsed here and nowhere below; errors turned into one-line refusals."""
