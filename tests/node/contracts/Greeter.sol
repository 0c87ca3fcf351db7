// SPDX-License-Identifier: MIT
// A small contract for the embedded EVM's tests: storage, an event with indexed topics, a
// require with a reason, and a view.
pragma solidity ^0.8.20;

contract Greeter {
    event Greeted(address indexed from, uint256 indexed count, string message);

    uint256 public count;
    string public message;

    constructor(string memory initial) {
        message = initial;
    }

    function greet(string calldata text) external returns (uint256) {
        require(bytes(text).length > 0, "empty greeting");
        count += 1;
        message = text;
        emit Greeted(msg.sender, count, text);
        return count;
    }

    function echo(uint256 value) external pure returns (uint256) {
        return value * 2;
    }
}
