"""Doctor: checks that an account (or the local stack) has every resource the utilities need."""
