// Host tests of the parts of hub.js that decide something without a browser (node --test; run by
// `make test-host`). The rest of hub.js is tested through the facade by the browser tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { room } from './hub.js';

test('the room is read from the query as the server reads it', () => {
    assert.equal(room('http://h/rt?room=lobby'), 'lobby');
    assert.equal(room('http://h/rt?token=x&room=a%3Ab%2fc&room=second'), 'a:b/c', 'decoded; the first one');
    assert.equal(room('http://h/rt?myroom=x&roomy=y'), null);
    assert.equal(room('http://h/rt'), null);
    assert.equal(room('http://h/rt?room=%zz%4'), '%zz%4', 'a bad escape stays as it is');
    assert.equal(room('http://h/rt?room=%ff'), '\ufffd', 'bytes that are not UTF-8 read as U+FFFD, as form_urlencoded reads them');
    assert.equal(room('http://h/rt?room=a+b'), 'a b');
    assert.equal(room('http://h/rt?ro%6Fm=k'), 'k', 'the key is decoded too');
    assert.equal(room('http://h/rt?room=x#y&room=z'), 'x', 'not from the fragment');
    assert.equal(room('http://h/rt#x?room=y'), null, 'a ? in the fragment starts no query');
    assert.equal(room('http://h/room=x'), null, 'not from the path');
});
