"""AWS deployment: an AWS SAM template from an app's topology (``apix deploy aws``)."""
