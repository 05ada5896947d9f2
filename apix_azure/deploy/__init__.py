"""`apix deploy azure`: an Azure Functions project folder generated from an app."""
