"""Email: message builders (text + HTML from templates/mail), the SMTP sender and the dev sink."""
