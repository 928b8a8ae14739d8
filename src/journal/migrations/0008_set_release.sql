-- v8: a waiting set the user released (`autorender-sync release`): it goes
-- without its trigger, quiet time or missing frames (files still settling
-- are still waited for). A new round starts unreleased.
ALTER TABLE sets ADD COLUMN released INTEGER NOT NULL DEFAULT 0;
